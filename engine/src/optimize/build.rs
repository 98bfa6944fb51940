//! The three variant builders, end to end from the baseline network and calibration images: what
//! `inferscope build-variants` runs (its progress bars come through [`ProgressSink`]) and what the
//! end-to-end test runs on a few photos. Deterministic for a given seed and input order.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use super::block;
use super::forward::{self, Act};
use super::hessian::{self, Hessian};
use super::prune::{self, KeepRatios};
use super::quant::{self, CalibMethod, QuantFormat};
use super::sparse::{self, SparseGptOptions};
use super::spdy;
use crate::model::{Bottleneck, Conv, ResNet};
use crate::{Error, Result};

/// Where the builders report progress. The library draws nothing itself: the application installs a
/// sink once per process ([`set_progress_sink`]; `inferscope build-variants` draws terminal bars),
/// as a logger is installed for the `log` facade. Without one, notes go to `tracing` and bars nowhere.
pub trait ProgressSink: Send + Sync {
    /// A step of `len` units called `what` begins.
    fn start(&self, len: usize, what: &str) -> Box<dyn ProgressTask>;
    /// A line worth showing between steps.
    fn note(&self, msg: &str);
    /// Variant `id` (a registry id) reached `state` in this build: its steps begin (`Building`) or
    /// its file is written (`Written`). A server that serves the models folder meanwhile shows it
    /// (`build-variants` writes it into [`crate::build_status`]). Default: nothing.
    fn variant(&self, _id: &str, _state: crate::build_status::VariantState) {}
}

/// One step under way (a bar on a terminal).
pub trait ProgressTask: Send + Sync {
    fn inc(&self, n: u64);
    /// The step is over; the bar goes away.
    fn finish(&self);
}

static SINK: std::sync::OnceLock<Box<dyn ProgressSink>> = std::sync::OnceLock::new();

/// Installs the process's progress sink; `false` if one was installed already (it stays).
pub fn set_progress_sink(sink: Box<dyn ProgressSink>) -> bool {
    SINK.set(sink).is_ok()
}

/// Progress reporting of one build: to the installed sink, or nowhere when `hidden` (tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub hidden: bool,
}

/// A step's progress (see [`Progress::bar`]); does nothing when hidden or without a sink.
pub struct Bar(Option<Box<dyn ProgressTask>>);

impl Bar {
    pub fn inc(&self, n: u64) {
        if let Some(t) = &self.0 {
            t.inc(n);
        }
    }

    pub fn finish_and_clear(&self) {
        if let Some(t) = &self.0 {
            t.finish();
        }
    }
}

impl Progress {
    pub fn bar(&self, len: usize, what: &str) -> Bar {
        match SINK.get() {
            Some(sink) if !self.hidden => Bar(Some(sink.start(len, what))),
            _ => Bar(None),
        }
    }

    /// Variant `id` reached `state` ([`ProgressSink::variant`]).
    pub fn variant(&self, id: &str, state: crate::build_status::VariantState) {
        if let Some(sink) = SINK.get().filter(|_| !self.hidden) {
            sink.variant(id, state);
        }
    }

    pub fn note(&self, msg: &str) {
        if self.hidden {
            return;
        }
        match SINK.get() {
            Some(sink) => sink.note(msg),
            None => tracing::info!("{msg}"),
        }
    }
}

fn opt_err(e: impl std::fmt::Display) -> Error {
    Error::Runtime(format!("variant build: {e}"))
}

fn apply<T: Sync, U: Send>(xs: &[T], f: impl Fn(&T) -> U + Sync + Send) -> Vec<U> {
    xs.par_iter().map(f).collect()
}

/// Whether two convolutions read the same im2col columns from the same input.
fn same_geometry(a: &Conv, b: &Conv) -> bool {
    a.kernel == b.kernel && a.stride == b.stride && a.pad == b.pad && a.in_ch == b.in_ch
}

// ---------------------------------------------------------------------------------------------------
// Comparing a network with the baseline
// ---------------------------------------------------------------------------------------------------

/// How close a network's outputs are to the baseline's on some images.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Agreement {
    /// Fraction of images with the same top-1 class.
    pub top1: f64,
    /// Mean KL(baseline ‖ variant) of the softmax outputs, in nats.
    pub kl: f64,
}

/// Agreement of `logits` with `reference` (one row per image).
pub fn agreement(reference: &[Vec<f32>], logits: &[Vec<f32>]) -> Agreement {
    let n = reference.len().max(1) as f64;
    let mut same = 0usize;
    let mut kl = 0f64;
    for (r, l) in reference.iter().zip(logits) {
        same += usize::from(crate::classify::argmax(r) == crate::classify::argmax(l));
        let (p, q) = (crate::classify::softmax(r), crate::classify::softmax(l));
        kl += p
            .iter()
            .zip(&q)
            .filter(|(a, _)| **a > 0.0)
            .map(|(&a, &b)| f64::from(a) * (f64::from(a) / f64::from(b).max(1e-30)).ln())
            .sum::<f64>();
    }
    Agreement {
        top1: same as f64 / n,
        kl: kl / n,
    }
}

// ---------------------------------------------------------------------------------------------------
// Calibration images
// ---------------------------------------------------------------------------------------------------

/// `images` extended to `target` images (when fewer) with horizontal flips, then random crops (80–95%
/// of the side, rescaled bilinearly to 224) of originals; deterministic for a seed.
pub fn augment(images: &[Act], target: usize, seed: u64) -> Vec<Act> {
    let mut out: Vec<Act> = images.iter().take(target).cloned().collect();
    let mut i = 0;
    while out.len() < target && i < images.len() {
        out.push(hflip(&images[i]));
        i += 1;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut i = 0;
    while out.len() < target && !images.is_empty() {
        let x = &images[i % images.len()];
        let side = (x.h as f64 * rng.random_range(0.80..0.95)) as usize;
        let (oy, ox) = (
            rng.random_range(0..=x.h - side),
            rng.random_range(0..=x.w - side),
        );
        let mut c = crop_resize(x, oy, ox, side);
        if rng.random_bool(0.5) {
            c = hflip(&c);
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Mirror image (left ↔ right).
pub fn hflip(x: &Act) -> Act {
    let mut y = x.clone();
    for row in y.data.chunks_exact_mut(x.w) {
        row.reverse();
    }
    y
}

/// The `side × side` square at `(oy, ox)`, resized to the original size (bilinear, align-corners off).
pub fn crop_resize(x: &Act, oy: usize, ox: usize, side: usize) -> Act {
    let (h, w) = (x.h, x.w);
    let mut data = vec![0f32; x.c * h * w];
    let scale = side as f32 / h as f32;
    let coord = |o: usize, len: usize| {
        let s = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (side - 1) as f32);
        let i0 = s.floor() as usize;
        let i1 = (i0 + 1).min(side - 1);
        let _ = len;
        (i0, i1, s - i0 as f32)
    };
    for c in 0..x.c {
        let plane = &x.data[c * h * w..(c + 1) * h * w];
        for y in 0..h {
            let (y0, y1, fy) = coord(y, h);
            for xx in 0..w {
                let (x0, x1, fx) = coord(xx, w);
                let p = |yy: usize, xi: usize| plane[(oy + yy) * w + ox + xi];
                let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
                let bot = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
                data[(c * h + y) * w + xx] = top * (1.0 - fy) + bot * fy;
            }
        }
    }
    Act { c: x.c, h, w, data }
}

// ---------------------------------------------------------------------------------------------------
// 2:4 sparsity
// ---------------------------------------------------------------------------------------------------

/// Settings of the 2:4 builds.
#[derive(Debug, Clone, Serialize)]
pub struct SparseOptions {
    /// Calibration images for the layer Hessians.
    pub images: usize,
    /// Output positions sampled per image and layer for a Hessian.
    pub positions: usize,
    pub damp: f64,
    pub block: usize,
    /// Add the mirrored images (twice the samples per Hessian, for small calibration sets).
    pub flips: bool,
    /// Extend the calibration images to this many with mirrors and random crops (0: none). The
    /// positions sampled per image shrink in proportion where a layer has more positions than
    /// `positions`, so the early layers' Hessians keep their sample count and the late layers (stage 4:
    /// 49 positions per image) get more samples.
    pub augment_to: usize,
    /// Choose each group's pair by joint OBS error (see [`SparseGptOptions::group_obs`]).
    pub group_obs: bool,
    /// Leave the FC layer dense (its 2 M weights are 8% of the network's).
    pub dense_fc: bool,
    pub seed: u64,
}

impl Default for SparseOptions {
    fn default() -> Self {
        SparseOptions {
            images: 256,
            positions: 256,
            damp: 0.01,
            block: 128,
            flips: false,
            augment_to: 0,
            group_obs: true,
            dense_fc: false,
            seed: 0,
        }
    }
}

/// Layers left dense by the 2:4 builds, with the reason.
pub fn dense_layers(net: &ResNet, o: &SparseOptions) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = net
        .convs()
        .filter(|c| !c.in_ch.is_multiple_of(sparse::GROUP))
        .map(|c| {
            (
                c.name.clone(),
                format!(
                    "{} input channels: no groups of 4 along the input channels",
                    c.in_ch
                ),
            )
        })
        .collect();
    if o.dense_fc {
        v.push((net.fc.name.clone(), "kept dense by option".into()));
    }
    v
}

/// Share of the network's weights (convs and FC) that a 2:4 build leaves dense.
pub fn dense_weight_fraction(net: &ResNet, o: &SparseOptions) -> f64 {
    let names: Vec<String> = dense_layers(net, o).into_iter().map(|d| d.0).collect();
    let conv: usize = net.convs().map(|c| c.weight.len()).sum();
    let total = conv + net.fc.weight.len();
    let dense: usize = net
        .convs()
        .filter(|c| names.contains(&c.name))
        .map(|c| c.weight.len())
        .sum::<usize>()
        + if o.dense_fc { net.fc.weight.len() } else { 0 };
    dense as f64 / total.max(1) as f64
}

/// Magnitude 2:4 (no compensation) of every conv whose input channels come in groups of 4, and the FC.
pub fn build_magnitude24(net: &ResNet) -> Result<ResNet> {
    let mut m = net.clone();
    for c in m
        .convs_mut()
        .filter(|c| c.in_ch.is_multiple_of(sparse::GROUP))
    {
        sparse::magnitude_24_conv(c).map_err(opt_err)?;
    }
    sparse::magnitude_24(&mut m.fc.weight);
    Ok(m)
}

fn sparsify(conv: &mut Conv, h: &Hessian, o: &SparseOptions) -> Result<()> {
    sparse::sparsegpt_24_conv(
        conv,
        h,
        SparseGptOptions {
            damp: o.damp,
            block: o.block,
            group_obs: o.group_obs,
        },
    )
    .map_err(opt_err)
}

/// SparseGPT 2:4, sequentially: each layer's Hessian comes from the inputs that the already sparsified
/// layers before it produce, so later layers compensate earlier errors.
pub fn build_sparsegpt24(
    net: &ResNet,
    calib: &[Act],
    o: &SparseOptions,
    progress: Progress,
) -> Result<ResNet> {
    let imgs = &calib[..o.images.min(calib.len())];
    if imgs.is_empty() {
        return Err(opt_err("no calibration images"));
    }
    let photos = imgs.len();
    let target = if o.augment_to > 0 {
        o.augment_to
    } else if o.flips {
        2 * imgs.len()
    } else {
        imgs.len()
    };
    let augmented;
    let imgs = if target > imgs.len() {
        augmented = augment(imgs, target, o.seed);
        &augmented[..]
    } else {
        imgs
    };
    // Early layers: the positions per image shrink with the augmented images (same sample count as
    // the photos alone would give); late layers, with fewer positions than that, use all of them.
    let positions = if o.augment_to > 0 {
        (o.positions * photos).div_ceil(imgs.len()).max(16)
    } else {
        o.positions
    };
    let o = &SparseOptions {
        positions,
        ..o.clone()
    };
    let mut sp = net.clone();
    let nblocks = sp.blocks().count();
    let bar = progress.bar(nblocks + 2, "2:4 SparseGPT (layers by block)");
    // The stem stays dense (3 input channels).
    let mut xs: Vec<Act> = apply(imgs, |x| forward::stem(&sp, x));
    bar.inc(1);
    for st in 0..sp.stages.len() {
        for bi in 0..sp.stages[st].len() {
            let b: &mut Bottleneck = &mut sp.stages[st][bi];
            let h1 = hessian::conv_hessian(&b.conv1, &xs, o.positions, o.seed);
            if let Some(d) = &mut b.downsample {
                if same_geometry(d, &b.conv1) {
                    sparsify(d, &h1, o)?;
                } else {
                    let hd = hessian::conv_hessian(d, &xs, o.positions, o.seed);
                    sparsify(d, &hd, o)?;
                }
            }
            sparsify(&mut b.conv1, &h1, o)?;
            drop(h1);
            let a1: Vec<Act> = apply(&xs, |x| forward::conv_forward(&b.conv1, x));
            let h2 = hessian::conv_hessian(&b.conv2, &a1, o.positions, o.seed);
            sparsify(&mut b.conv2, &h2, o)?;
            drop(h2);
            let a2: Vec<Act> = apply(&a1, |x| forward::conv_forward(&b.conv2, x));
            drop(a1);
            let h3 = hessian::conv_hessian(&b.conv3, &a2, o.positions, o.seed);
            sparsify(&mut b.conv3, &h3, o)?;
            drop(h3);
            let b: &Bottleneck = b;
            xs = xs
                .par_iter()
                .zip(a2.par_iter())
                .map(|(x, a)| forward::residual(b, x, forward::conv_forward(&b.conv3, a)))
                .collect();
            bar.inc(1);
        }
    }
    if o.dense_fc {
        bar.finish_and_clear();
        return Ok(sp);
    }
    let feats: Vec<Vec<f32>> = apply(&xs, forward::global_avg_pool);
    drop(xs);
    let h = hessian::linear_hessian(&feats);
    let fc = &mut sp.fc;
    fc.weight = sparse::sparsegpt_24(
        &fc.weight,
        fc.out_features,
        fc.in_features,
        &h,
        SparseGptOptions {
            damp: o.damp,
            block: o.block,
            group_obs: o.group_obs,
        },
    )
    .map_err(|e| opt_err(format!("fc: {e}")))?;
    bar.finish_and_clear();
    Ok(sp)
}

// ---------------------------------------------------------------------------------------------------
// INT8
// ---------------------------------------------------------------------------------------------------

/// Settings of the INT8 build.
#[derive(Debug, Clone, Serialize)]
pub struct Int8Options {
    /// Images whose activations set the ranges (augmented with flips/crops when fewer photos exist).
    pub images: usize,
    /// Values sampled per tensor and image into the histograms.
    pub samples_per_tensor: usize,
    /// Calibration methods compared; the best on the selection images is kept.
    #[serde(skip)]
    pub methods: Vec<CalibMethod>,
    #[serde(skip)]
    pub format: QuantFormat,
    /// ONNX Runtime threads for the comparison runs.
    pub threads: usize,
    pub seed: u64,
    /// Bias correction (Nagel et al. 2019; [`super::correct`] with the mean only): with the weights on
    /// their INT8 grid, every layer's per-channel output mean on this many calibration photos (and
    /// their mirror images) is moved back to the float network's through its bias, in graph order.
    /// The weights stay on their grid. 0: off.
    pub bias_correction_images: usize,
}

impl Default for Int8Options {
    fn default() -> Self {
        Int8Options {
            images: 1000,
            samples_per_tensor: 16384,
            methods: vec![
                CalibMethod::Max,
                CalibMethod::Percentile(99.99),
                CalibMethod::Percentile(99.999),
                CalibMethod::Mse,
                CalibMethod::Entropy,
            ],
            format: QuantFormat {
                signed_acts: false,
                weight_bits: 7,
            },
            threads: 2,
            seed: 0,
            bias_correction_images: 0,
        }
    }
}

/// One calibration method's result on the selection images.
#[derive(Debug, Clone, Serialize)]
pub struct MethodScore {
    pub method: String,
    pub agreement: Agreement,
}

/// What the INT8 build chose.
#[derive(Debug, Clone, Serialize)]
pub struct Int8Summary {
    pub format: String,
    pub calibration_images: usize,
    pub photos: usize,
    pub methods: Vec<MethodScore>,
    pub chosen: String,
    /// What the bias correction did (absent when it was off).
    pub bias_correction: Option<super::correct::CorrectionSummary>,
}

/// Activation histograms of every quantizable tensor over `images`.
pub fn activation_stats(
    net: &ResNet,
    images: &[Act],
    samples: usize,
    progress: Progress,
) -> quant::Stats {
    let bar = progress.bar(images.len(), "INT8 activation histograms");
    // Each image's sampling phase comes from its index, and histograms are integer counts with a
    // min and max: merged in any grouping they are the same, so the result does not depend on the
    // thread count (it did when the phase came from a per-thread chunk).
    let all = images
        .par_iter()
        .enumerate()
        .fold(quant::Stats::new, |mut st, (idx, x)| {
            forward::forward_observed(net, x, &mut |name, v| {
                st.entry(name.to_string())
                    .or_default()
                    .add(v, samples, idx * 7919);
            });
            bar.inc(1);
            st
        })
        .reduce(quant::Stats::new, |mut all, st| {
            for (k, h) in st {
                all.entry(k).or_default().merge(&h);
            }
            all
        });
    bar.finish_and_clear();
    all
}

/// Logits of a model file on ONNX Runtime, one image at a time.
pub fn ort_logits(path: &Path, images: &[Act], threads: usize) -> Result<Vec<Vec<f32>>> {
    let s = crate::cpu::OrtSession::open(path, threads)?;
    images
        .iter()
        .map(|x| {
            Ok(s.run_named(&x.data, 1, &["logits"])?
                .pop()
                .map(|o| o.1)
                .unwrap_or_default())
        })
        .collect()
}

/// [`Int8Options::bias_correction_images`]: the network with its weights on their INT8 grid and every
/// bias corrected so that each layer's per-channel output mean equals `net`'s on the calibration
/// photos (float activations; in graph order, inputs from the corrected layers). The weights' grid does
/// not depend on the activation calibration method, so one correction serves every candidate: only
/// its biases are used. `None` when the option is off.
pub fn int8_bias_correction(
    net: &ResNet,
    stats: &quant::Stats,
    calib: &[Act],
    o: &Int8Options,
    progress: Progress,
) -> Option<(ResNet, super::correct::CorrectionSummary)> {
    let m = *o.methods.first()?;
    if o.bias_correction_images == 0 {
        return None;
    }
    let mut w = quant::quantize_network(net, stats, m, o.format);
    let co = super::correct::CorrectOptions {
        images: o.bias_correction_images.min(calib.len()),
        flips: true,
        match_std: false,
        fc: true,
        max_scale: 1.0,
    };
    let summary = super::correct::correct_network(net, &mut w, calib, &co, progress);
    Some((w, summary))
}

/// INT8: histograms on the calibration images, then each method's QDQ model run on ONNX Runtime over
/// the selection images (disjoint from nothing the evaluation uses: they are calibration photos) and
/// compared with the baseline's outputs; the best (top-1 agreement, then KL) is returned.
pub fn build_int8(
    net: &ResNet,
    calib: &[Act],
    select: &[Act],
    baseline_logits: &[Vec<f32>],
    scratch: &Path,
    o: &Int8Options,
    progress: Progress,
) -> Result<(ResNet, Int8Summary)> {
    let images = augment(calib, o.images, o.seed);
    if images.is_empty() {
        return Err(opt_err("no calibration images"));
    }
    let stats = activation_stats(net, &images, o.samples_per_tensor, progress);
    let corrected = int8_bias_correction(net, &stats, calib, o, progress);
    let bar = progress.bar(o.methods.len(), "INT8 calibration methods on ORT");
    let mut scores = Vec::new();
    let mut best: Option<(Agreement, ResNet, String)> = None;
    for &m in &o.methods {
        let mut q = quant::quantize_network(net, &stats, m, o.format);
        if let Some((w, _)) = &corrected {
            for (qc, wc) in q.convs_mut().zip(w.convs()) {
                qc.bias.clone_from(&wc.bias);
            }
            q.fc.bias.clone_from(&w.fc.bias);
        }
        let path = scratch.join(format!(
            "int8-candidate-{}.onnx",
            m.label().replace([' ', '.'], "_")
        ));
        crate::onnx_io::save(&q, &path, &Default::default())?;
        let logits = ort_logits(&path, select, o.threads)?;
        let _ = std::fs::remove_file(&path);
        let a = agreement(baseline_logits, &logits);
        scores.push(MethodScore {
            method: m.label(),
            agreement: a,
        });
        let better = match &best {
            None => true,
            Some((b, _, _)) => a.top1 > b.top1 || (a.top1 == b.top1 && a.kl < b.kl),
        };
        if better {
            best = Some((a, q, m.label()));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (_, q, chosen) = best.ok_or_else(|| opt_err("no calibration method given"))?;
    Ok((
        q,
        Int8Summary {
            format: o.format.label(),
            calibration_images: images.len(),
            photos: calib.len().min(o.images),
            methods: scores,
            chosen,
            bias_correction: corrected.map(|(_, s)| s),
        },
    ))
}

// ---------------------------------------------------------------------------------------------------
// Structured pruning
// ---------------------------------------------------------------------------------------------------

/// How the per-block keep ratios are chosen.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum RatioSearch {
    /// One ratio per stage, coordinate moves of ±20%/±10% per stage scored by KL on search images.
    Stages,
    /// One ratio per block by dynamic programming over the per-block OBS error tables under the MACs
    /// budget (SPDY-style), with per-stage weights of the errors searched by KL on search images.
    Blocks,
}

/// Settings of the pruning build.
#[derive(Debug, Clone, Serialize)]
pub struct PruneOptions {
    /// Target: MACs at most this fraction of the baseline's.
    pub flops_budget: f64,
    /// Images for the channel-selection Hessians (dense network).
    pub order_images: usize,
    /// Images scored for each candidate of the ratio search (other calibration images).
    pub search_images: usize,
    /// Images for the final sequential least-squares reconstruction.
    pub reconstruct_images: usize,
    /// Extend the reconstruction images to this many with mirrors and random crops ([`augment`]; at
    /// least their mirror images are always added).
    pub reconstruct_augment_to: usize,
    /// Per-block channel counts to use instead of the ratio search (e.g. an earlier run's
    /// `details.pruned.channels`, to refit with other settings without searching again).
    pub counts: Option<BlockCounts>,
    pub positions: usize,
    /// Smallest keep ratio considered.
    pub min_keep: f64,
    /// Rounds of the coordinate search (over stage ratios or stage error weights).
    pub search_rounds: usize,
    pub search: RatioSearch,
    /// Keep ratios offered to the dynamic program per block (evenly from `min_keep` to 1).
    pub levels: usize,
    /// Cost units of the dynamic program (the budget's resolution).
    pub buckets: usize,
    /// Kept channel counts are multiples of this.
    pub channel_multiple: usize,
    /// Refit each block's last conv so the block's *output* (shortcut included) matches the baseline's,
    /// absorbing the drift carried by the shortcut (else only the conv's own output is matched).
    pub block_output_refit: bool,
    /// The rebuild's ridge pulls each layer toward its baseline weights (restricted to the kept
    /// channels) instead of toward zero ([`prune::solve_normal_toward`]).
    pub refit_toward_dense: bool,
    /// Gauss–Newton steps on each block's `conv2` toward the block output, each followed by `conv3`'s
    /// least-squares refit again ([`block::conv2_gauss_newton`]; 0: the per-layer refit only).
    pub block_steps: usize,
    /// Images the block steps see: the first `block_images` of the rebuild's images (the photos, then
    /// their mirror images; 0: all). `conv3`'s refits after the steps still use every image.
    pub block_images: usize,
    /// Channels removed per greedy OBS step, as a fraction of the layer's channels.
    pub chunk: f64,
    pub damp: f64,
    pub seed: u64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            flops_budget: 0.70,
            order_images: 128,
            search_images: 48,
            // Issue 16, session 10: all 400 calibration photos + mirrors for the rebuild instead of
            // 160 take the pruned network from 79.5% to 81.8% on the 400 held-out photos (agreement
            // 85.0% → 88.5%), at 2.5× the rebuild's time and 11.5 GB peak memory (docs/variants.md).
            reconstruct_images: 400,
            reconstruct_augment_to: 0,
            counts: None,
            positions: 256,
            min_keep: 0.25,
            search_rounds: 2,
            search: RatioSearch::Blocks,
            levels: 24,
            buckets: 4000,
            channel_multiple: prune::CHANNEL_MULTIPLE,
            block_output_refit: true,
            refit_toward_dense: false,
            block_steps: 0,
            block_images: 0,
            chunk: 1.0 / 32.0,
            damp: 1e-2,
            seed: 0,
        }
    }
}

/// Kept inner channels per block: (`conv1` outputs, `conv2` outputs), in graph order.
pub type BlockCounts = Vec<(usize, usize)>;

/// One evaluated point of the ratio search.
#[derive(Debug, Clone, Serialize)]
pub struct SearchPoint {
    /// What was searched: stage ratios or stage error weights.
    pub params: [f64; 4],
    pub counts: BlockCounts,
    pub macs: u64,
    pub agreement: Agreement,
}

/// What the pruning build did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneSummary {
    /// Kept fraction of the inner channels per block.
    pub ratios: Vec<f64>,
    pub macs: u64,
    pub baseline_macs: u64,
    pub flops_fraction: f64,
    pub search: Vec<SearchPoint>,
    /// Inner channels per block after pruning (`conv1` out, `conv2` out).
    pub channels: Vec<(String, usize, usize)>,
    /// Seconds per phase: channel orders, ratio search, reconstruction.
    pub phase_seconds: Vec<(String, f64)>,
    /// Per block, the Gauss–Newton steps on `conv2` toward the block output (empty without
    /// [`PruneOptions::block_steps`]).
    pub block_fit: Vec<(String, Vec<block::GnStep>)>,
}

/// Per block: the dense Hessians of `conv2`'s and `conv3`'s inputs, the channel removal orders and their
/// error tables (relative to the layer's output energy: `err1[n]` for `conv2` once `n` outputs of
/// `conv1` are removed, `err2[n]` for `conv3` once `n` outputs of `conv2` are).
pub struct BlockStats {
    pub h2: Hessian,
    pub h3: Hessian,
    pub order1: Vec<usize>,
    pub order2: Vec<usize>,
    pub err1: Vec<f64>,
    pub err2: Vec<f64>,
}

/// `tr(W H Wᵀ)`: a layer's output energy on the inputs behind `h`.
fn output_energy(w: &[f32], rows: usize, cols: usize, h: &Hessian) -> f64 {
    sparse::reconstruction_error(w, &vec![0.0; w.len()], rows, cols, h).max(f64::MIN_POSITIVE)
}

/// Dense-network statistics for the ratio search: Hessians, OBS removal orders and error tables per block.
pub fn prune_stats(
    net: &ResNet,
    imgs: &[Act],
    o: &PruneOptions,
    progress: Progress,
) -> Result<Vec<BlockStats>> {
    let nblocks = net.blocks().count();
    let bar = progress.bar(nblocks, "pruning: channel orders (OBS)");
    let mut xs: Vec<Act> = apply(imgs, |x| forward::stem(net, x));
    let mut out = Vec::new();
    for b in net.blocks() {
        let a1: Vec<Act> = apply(&xs, |x| forward::conv_forward(&b.conv1, x));
        let h2 = hessian::conv_hessian(&b.conv2, &a1, o.positions, o.seed);
        let a2: Vec<Act> = apply(&a1, |x| forward::conv_forward(&b.conv2, x));
        drop(a1);
        let h3 = hessian::conv_hessian(&b.conv3, &a2, o.positions, o.seed);
        let (c1, c2) = (b.conv1.out_ch, b.conv2.out_ch);
        let m = o.channel_multiple;
        let min1 = prune::kept_channels(o.min_keep, c1, m);
        let min2 = prune::kept_channels(o.min_keep, c2, m);
        let chunk1 = ((c1 as f64 * o.chunk).round() as usize).max(1);
        let chunk2 = ((c2 as f64 * o.chunk).round() as usize).max(1);
        let kk = b.conv2.kernel * b.conv2.kernel;
        let r1 = prune::obs_removal(
            &b.conv2.weight,
            b.conv2.out_ch,
            b.conv2.fan_in(),
            &h2,
            prune::ObsSchedule {
                group: kk,
                min_keep: min1,
                chunk: chunk1,
                damp: o.damp,
            },
        )
        .map_err(|e| opt_err(format!("{}: {e}", b.conv2.name)))?;
        let r2 = prune::obs_removal(
            &b.conv3.weight,
            b.conv3.out_ch,
            b.conv3.fan_in(),
            &h3,
            prune::ObsSchedule {
                group: 1,
                min_keep: min2,
                chunk: chunk2,
                damp: o.damp,
            },
        )
        .map_err(|e| opt_err(format!("{}: {e}", b.conv3.name)))?;
        let e2 = output_energy(&b.conv2.weight, b.conv2.out_ch, b.conv2.fan_in(), &h2);
        let e3 = output_energy(&b.conv3.weight, b.conv3.out_ch, b.conv3.fan_in(), &h3);
        xs = xs
            .par_iter()
            .zip(a2.par_iter())
            .map(|(x, a)| forward::residual(b, x, forward::conv_forward(&b.conv3, a)))
            .collect();
        out.push(BlockStats {
            h2,
            h3,
            order1: r1.order,
            order2: r2.order,
            err1: r1.error.iter().map(|e| e / e2).collect(),
            err2: r2.error.iter().map(|e| e / e3).collect(),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Per-block channel counts for per-stage keep ratios.
pub fn counts_from_ratios(net: &ResNet, ratios: &KeepRatios, multiple: usize) -> BlockCounts {
    net.stages
        .iter()
        .zip(ratios)
        .flat_map(|(st, &r)| {
            st.iter().map(move |b| {
                (
                    prune::kept_channels(r, b.conv1.out_ch, multiple),
                    prune::kept_channels(r, b.conv2.out_ch, multiple),
                )
            })
        })
        .collect()
}

/// Per-block channel counts minimizing the weighted sum of the blocks' error tables within `budget`
/// MACs (dynamic program); `weights` scale the errors of each stage's blocks.
pub fn counts_by_dp(
    net: &ResNet,
    stats: &[BlockStats],
    weights: &[f64; 4],
    budget: u64,
    o: &PruneOptions,
) -> Option<BlockCounts> {
    let sizes = prune::block_input_sizes(net);
    let m = o.channel_multiple;
    let blocks: Vec<(usize, &Bottleneck)> = net
        .stages
        .iter()
        .enumerate()
        .flat_map(|(si, st)| st.iter().map(move |b| (si, b)))
        .collect();
    let full: u64 = blocks
        .iter()
        .zip(&sizes)
        .map(|((_, b), &s)| prune::block_macs(b, s, b.conv1.out_ch, b.conv2.out_ch))
        .sum();
    let fixed = net.macs(crate::INPUT_SIZE) - full;
    let mut layers = Vec::new();
    let mut options: Vec<Vec<(usize, usize)>> = Vec::new();
    for (((si, b), st), &s) in blocks.iter().zip(stats).zip(&sizes) {
        let (c1, c2) = (b.conv1.out_ch, b.conv2.out_ch);
        let mut counts: Vec<(usize, usize)> = (0..=o.levels.max(1))
            .map(|j| {
                let r = o.min_keep + (1.0 - o.min_keep) * j as f64 / o.levels.max(1) as f64;
                (
                    prune::kept_channels(r, c1, m),
                    prune::kept_channels(r, c2, m),
                )
            })
            .collect();
        counts.dedup();
        let err = |t: &[f64], removed: usize| t.get(removed).or(t.last()).copied().unwrap_or(0.0);
        layers.push(
            counts
                .iter()
                .map(|&(k1, k2)| spdy::Choice {
                    cost: prune::block_macs(b, s, k1, k2),
                    error: weights[*si] * (err(&st.err1, c1 - k1) + err(&st.err2, c2 - k2)),
                })
                .collect(),
        );
        options.push(counts);
    }
    let pick = spdy::min_error_within(&layers, budget.checked_sub(fixed)?, o.buckets)?;
    Some(pick.iter().zip(&options).map(|(&i, c)| c[i]).collect())
}

fn keep_sets(
    b: &Bottleneck,
    st: &BlockStats,
    (k1, k2): (usize, usize),
) -> (Vec<usize>, Vec<usize>) {
    let (c1, c2) = (b.conv1.out_ch, b.conv2.out_ch);
    (
        prune::kept_from_order(&st.order1, c1, k1),
        prune::kept_from_order(&st.order2, c2, k2),
    )
}

fn rows(w: &[f32], per: usize, keep: &[usize]) -> Vec<f32> {
    keep.iter()
        .flat_map(|&o| w[o * per..(o + 1) * per].iter().copied())
        .collect()
}

/// The pruned network for per-block channel `counts`, reconstructed layer by layer from the dense
/// Hessians (fast: used to score search candidates).
pub fn prune_independent(
    net: &ResNet,
    stats: &[BlockStats],
    counts: &[(usize, usize)],
    damp: f64,
) -> Result<ResNet> {
    let mut p = net.clone();
    for ((b, s), &k) in p.stages.iter_mut().flatten().zip(stats).zip(counts) {
        let (keep1, keep2) = keep_sets(b, s, k);
        let orig = b.clone();
        prune::remove_inner_channels(b, &keep1, &keep2);
        // conv2: outputs keep2 of the original, from inputs keep1.
        let kk = orig.conv2.kernel * orig.conv2.kernel;
        let cols = prune::input_columns(&keep1, kk);
        let target = rows(&orig.conv2.weight, orig.conv2.fan_in(), &keep2);
        let cross = faer::Mat::from_fn(s.h2.dim(), cols.len(), |i, j| s.h2.h[(i, cols[j])]);
        let hs = s.h2.permuted(&cols);
        b.conv2.weight =
            prune::least_squares(&target, keep2.len(), cross.as_ref(), hs.h.as_ref(), damp)
                .map_err(opt_err)?;
        // conv3: all outputs, from inputs keep2.
        let cross = faer::Mat::from_fn(s.h3.dim(), keep2.len(), |i, j| s.h3.h[(i, keep2[j])]);
        let hs = s.h3.permuted(&keep2);
        b.conv3.weight = prune::least_squares(
            &orig.conv3.weight,
            orig.conv3.out_ch,
            cross.as_ref(),
            hs.h.as_ref(),
            damp,
        )
        .map_err(opt_err)?;
    }
    p.validate().map_err(opt_err)?;
    Ok(p)
}

/// CPU seconds (user + system) of this process so far, from `/proc/self/stat` (0 where it cannot be
/// read): the rebuild's notes give its CPU time next to its wall time, which a shared machine stretches.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces, in parentheses): utime and stime are the
    // 14th and 15th fields, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Per block (by name), the block-output steps taken on its `conv2` ([`block::GnStep`]).
pub type BlockSteps = Vec<(String, Vec<block::GnStep>)>;

/// The pruned network for per-block channel `counts`, reconstructed sequentially: every kept layer
/// (including `conv1` and the projection shortcut) is refitted by least squares so its output on the
/// pruned network's inputs matches the baseline's output on the baseline's inputs; with
/// `o.block_output_refit`, `conv3`'s target is the baseline's block output minus the pruned network's
/// shortcut, so the block's output (not only its branch) matches.
pub fn prune_sequential(
    net: &ResNet,
    stats: &[BlockStats],
    counts: &[(usize, usize)],
    imgs: &[Act],
    o: &PruneOptions,
    progress: Progress,
) -> Result<(ResNet, BlockSteps)> {
    let mut p = net.clone();
    let mut fits = Vec::new();
    let nblocks = net.blocks().count();
    let bar = progress.bar(nblocks, "pruning: least-squares rebuild");
    let mut xs: Vec<Act> = apply(imgs, |x| forward::stem(net, x));
    let mut xh = xs.clone();
    let refit = |c: &mut Conv,
                 target: &[f32],
                 rows_n: usize,
                 ref_conv: &Conv,
                 xin: &[Act],
                 rin: &[Act],
                 offset: Option<&[Act]>|
     -> Result<Hessian> {
        let (h, mut cross_w) =
            if hessian::target_cross_is_cheaper(rows_n, ref_conv.fan_in(), c.fan_in()) {
                hessian::conv_target_cross_hessian(
                    c,
                    xin,
                    ref_conv,
                    rin,
                    target,
                    rows_n,
                    o.positions,
                    o.seed,
                )
            } else {
                let (h, cross) =
                    hessian::conv_cross_hessian(c, xin, ref_conv, rin, o.positions, o.seed);
                let wt = faer::Mat::from_fn(rows_n, cross.nrows(), |r, j| {
                    f64::from(target[r * cross.nrows() + j])
                });
                let mut a = faer::Mat::<f64>::zeros(rows_n, cross.ncols());
                faer::linalg::matmul::matmul(
                    a.as_mut(),
                    faer::Accum::Replace,
                    &wt,
                    &cross,
                    1.0,
                    faer::Par::rayon(0),
                );
                (h, a)
            };
        if let Some(off) = offset {
            cross_w += hessian::conv_offset_cross(c, xin, off, o.positions, o.seed);
        }
        // The conv holds the baseline's weights restricted to its kept channels: the ridge's prior.
        let prior = o.refit_toward_dense.then(|| c.weight.clone());
        c.weight =
            prune::solve_normal_toward(cross_w.as_ref(), h.h.as_ref(), o.damp, prior.as_deref())
                .map_err(opt_err)?;
        Ok(h)
    };
    let (t_wall, t_cpu) = (Instant::now(), cpu_seconds());
    // Wall and CPU seconds of the block steps (targets, steps, conv3's refits after them).
    let mut step_time = (0f64, 0f64);
    let mut k = 0;
    for si in 0..net.stages.len() {
        for bi in 0..net.stages[si].len() {
            let base = &net.stages[si][bi];
            let (keep1, keep2) = keep_sets(base, &stats[k], counts[k]);
            k += 1;
            let b = &mut p.stages[si][bi];
            prune::remove_inner_channels(b, &keep1, &keep2);
            // conv1 (and the shortcut): same inputs, drifted by the pruning upstream.
            let t1 = rows(&base.conv1.weight, base.conv1.fan_in(), &keep1);
            refit(&mut b.conv1, &t1, keep1.len(), &base.conv1, &xh, &xs, None)?;
            if let (Some(d), Some(bd)) = (&mut b.downsample, &base.downsample) {
                refit(d, &bd.weight, bd.out_ch, bd, &xh, &xs, None)?;
            }
            let a1: Vec<Act> = apply(&xs, |x| forward::conv_forward(&base.conv1, x));
            let a1h: Vec<Act> = apply(&xh, |x| forward::conv_forward(&b.conv1, x));
            let t2 = rows(&base.conv2.weight, base.conv2.fan_in(), &keep2);
            let h2 = refit(&mut b.conv2, &t2, keep2.len(), &base.conv2, &a1h, &a1, None)?;
            let a2: Vec<Act> = apply(&a1, |x| forward::conv_forward(&base.conv2, x));
            let mut a2h: Vec<Act> = apply(&a1h, |x| forward::conv_forward(&b.conv2, x));
            drop(a1);
            // The shortcut's drift, shortcut(x) − shortcut'(x̂), for the block-output target.
            let drift: Option<Vec<Act>> = o.block_output_refit.then(|| {
                xs.par_iter()
                    .zip(xh.par_iter())
                    .map(|(x, x_hat)| {
                        let (s, s_hat) = match (&base.downsample, &b.downsample) {
                            (Some(d), Some(dh)) => (
                                forward::conv_forward(d, x),
                                forward::conv_forward(dh, x_hat),
                            ),
                            _ => (x.clone(), x_hat.clone()),
                        };
                        let mut s = s;
                        for (v, w) in s.data.iter_mut().zip(&s_hat.data) {
                            *v -= w;
                        }
                        s
                    })
                    .collect()
            });
            // conv3 to the block output, on the pruned branch's current conv2 outputs `a2h` (again after
            // every block-output step below).
            let refit_conv3 = |conv3: &mut Conv, a2h: &[Act]| {
                refit(
                    conv3,
                    &base.conv3.weight,
                    base.conv3.out_ch,
                    &base.conv3,
                    a2h,
                    &a2,
                    drift.as_deref(),
                )
            };
            refit_conv3(&mut b.conv3, &a2h)?;
            if o.block_steps > 0 {
                let (t_wall, t_cpu) = (Instant::now(), cpu_seconds());
                // The branch target at conv2's sampled positions, once for every step: the baseline's
                // conv3 output (bias included, before the block's ReLU) plus the shortcut's drift.
                let images = match o.block_images {
                    0 => a1h.len(),
                    m => m.min(a1h.len()),
                };
                let targets = block::BranchTargets::new(
                    &b.conv2,
                    &base.conv3,
                    &a2,
                    drift.as_deref(),
                    images,
                    o.positions,
                    o.seed,
                );
                let mut steps: Vec<block::GnStep> = Vec::new();
                for _ in 0..o.block_steps {
                    let st = block::conv2_gauss_newton(
                        &mut b.conv2,
                        &b.conv3,
                        &a1h,
                        &a2h,
                        &targets,
                        &h2,
                        o.damp,
                    )
                    .map_err(opt_err)?;
                    // The error after the previous step (conv3 refitted) is this step's `before`.
                    if let Some(prev) = steps.last_mut() {
                        prev.after = st.before;
                    }
                    steps.push(st);
                    a2h = apply(&a1h, |x| forward::conv_forward(&b.conv2, x));
                    refit_conv3(&mut b.conv3, &a2h)?;
                }
                if let Some(last) = steps.last_mut() {
                    last.after = block::branch_error(&b.conv3, &a2h, &targets);
                }
                drop(targets);
                progress.note(&format!(
                    "pruning: {} block error {} ({} images; {:.1} s wall, {:.1} s CPU)",
                    b.name,
                    steps
                        .iter()
                        .map(|s| format!("{:.4} → {:.4} (step {:.2})", s.before, s.after, s.step))
                        .collect::<Vec<_>>()
                        .join(", "),
                    images,
                    t_wall.elapsed().as_secs_f64(),
                    cpu_seconds() - t_cpu,
                ));
                step_time.0 += t_wall.elapsed().as_secs_f64();
                step_time.1 += cpu_seconds() - t_cpu;
                fits.push((b.name.clone(), steps));
            }
            drop((drift, a1h));
            let b: &Bottleneck = b;
            xs = xs
                .par_iter()
                .zip(a2.par_iter())
                .map(|(x, a)| forward::residual(base, x, forward::conv_forward(&base.conv3, a)))
                .collect();
            xh = xh
                .par_iter()
                .zip(a2h.par_iter())
                .map(|(x, a)| forward::residual(b, x, forward::conv_forward(&b.conv3, a)))
                .collect();
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    progress.note(&format!(
        "pruning: rebuild {:.0} s wall, {:.0} s CPU; of which block steps {:.0} s wall, {:.0} s CPU",
        t_wall.elapsed().as_secs_f64(),
        cpu_seconds() - t_cpu,
        step_time.0,
        step_time.1
    ));
    p.validate().map_err(opt_err)?;
    Ok((p, fits))
}

/// Structured pruning within the FLOPs budget: channel orders and error tables on the dense network, a
/// search for the per-block channel counts ([`RatioSearch`]), and a final sequential least-squares
/// rebuild.
pub fn build_pruned(
    net: &ResNet,
    calib: &[Act],
    o: &PruneOptions,
    progress: Progress,
) -> Result<(ResNet, PruneSummary)> {
    let n = calib.len();
    if n < 2 {
        return Err(opt_err("pruning needs at least 2 calibration images"));
    }
    let mut phases = Vec::new();
    let t_phase = Instant::now();
    // Split the calibration photos: channel statistics vs search scoring (disjoint, interleaved).
    // Flipped copies double the samples behind each Hessian (the late layers have few positions).
    let order_imgs: Vec<Act> = calib
        .iter()
        .step_by(2)
        .take(o.order_images)
        .cloned()
        .collect();
    let order_imgs = augment(&order_imgs, 2 * order_imgs.len(), o.seed);
    let search_imgs: Vec<Act> = calib
        .iter()
        .skip(1)
        .step_by(2)
        .take(o.search_images)
        .cloned()
        .collect();
    let stats = prune_stats(net, &order_imgs, o, progress)?;
    drop(order_imgs);
    phases.push((
        "channel orders".to_string(),
        t_phase.elapsed().as_secs_f64(),
    ));
    let base_macs = net.macs(crate::INPUT_SIZE);
    let budget = (o.flops_budget * base_macs as f64).floor() as u64;
    let reference = forward::forward_batch(net, &search_imgs);
    let m = o.channel_multiple;

    let mut search: Vec<SearchPoint> = Vec::new();
    let t0 = Instant::now();
    let candidate = |params: &[f64; 4]| -> Option<BlockCounts> {
        match o.search {
            RatioSearch::Stages => prune::fit_profile(net, params, o.min_keep, budget, m)
                .map(|r| counts_from_ratios(net, &r, m)),
            RatioSearch::Blocks => counts_by_dp(net, &stats, params, budget, o),
        }
    };
    let score = |params: &[f64; 4], counts: BlockCounts, search: &mut Vec<SearchPoint>| {
        if let Some(p) = search.iter().find(|p| p.counts == counts) {
            return Ok::<_, Error>(p.agreement);
        }
        let p = prune_independent(net, &stats, &counts, o.damp)?;
        let a = if search_imgs.is_empty() {
            Agreement { top1: 0.0, kl: 0.0 }
        } else {
            agreement(&reference, &forward::forward_batch(&p, &search_imgs))
        };
        search.push(SearchPoint {
            params: *params,
            counts,
            macs: pruned_macs_of(&p),
            agreement: a,
        });
        Ok(a)
    };
    let better = |a: &Agreement, b: &Agreement| a.kl < b.kl;
    let mut params: [f64; 4] = [1.0; 4];
    let fixed = o.counts.clone();
    if let Some(c) = &fixed {
        if c.len() != stats.len() {
            return Err(opt_err(format!(
                "{} channel counts given for {} blocks",
                c.len(),
                stats.len()
            )));
        }
        for ((b, &(k1, k2)), i) in net.blocks().zip(c).zip(0..) {
            if k1 == 0 || k2 == 0 || k1 > b.conv1.out_ch || k2 > b.conv2.out_ch {
                return Err(opt_err(format!(
                    "block {i} ({}): channel counts ({k1}, {k2}) outside 1..=({}, {})",
                    b.name, b.conv1.out_ch, b.conv2.out_ch
                )));
            }
        }
    }
    let rounds = if fixed.is_some() { 0 } else { o.search_rounds };
    let mut best_counts = match fixed {
        Some(c) => c,
        None => candidate(&params)
            .ok_or_else(|| opt_err("the FLOPs budget is below the smallest keep ratios"))?,
    };
    let bar = progress.bar(1 + rounds * 8, "pruning: ratio search");
    let mut best = if rounds > 0 {
        score(&params, best_counts.clone(), &mut search)?
    } else {
        Agreement { top1: 0.0, kl: 0.0 }
    };
    bar.inc(1);
    for round in 0..rounds {
        // Stage ratios move by ±20% then ±10%; stage error weights by ×/÷ 4 then 2.
        let step = match (o.search, round) {
            (RatioSearch::Stages, 0) => 1.2,
            (RatioSearch::Stages, _) => 1.1,
            (RatioSearch::Blocks, 0) => 4.0,
            (RatioSearch::Blocks, _) => 2.0,
        };
        for s in 0..4 {
            for f in [step, 1.0 / step] {
                let mut cand = params;
                cand[s] *= f;
                if let Some(c) = candidate(&cand) {
                    let a = score(&cand, c.clone(), &mut search)?;
                    if better(&a, &best) {
                        best = a;
                        best_counts = c;
                        params = cand;
                    }
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    phases.push(("ratio search".to_string(), t0.elapsed().as_secs_f64()));
    progress.note(&format!(
        "pruning: {:?} search, best parameters {:?} (KL {:.4}, top-1 agreement {:.3} on {} search images; {} candidates in {:.0} s)",
        o.search,
        params.map(|r| (r * 1000.0).round() / 1000.0),
        best.kl,
        best.top1,
        search_imgs.len(),
        search.len(),
        t0.elapsed().as_secs_f64()
    ));
    drop(search_imgs);
    let t1 = Instant::now();
    let rec_imgs: Vec<Act> = calib.iter().take(o.reconstruct_images).cloned().collect();
    let rec_imgs = augment(
        &rec_imgs,
        (2 * rec_imgs.len()).max(o.reconstruct_augment_to),
        o.seed,
    );
    let (pruned, block_fit) = prune_sequential(net, &stats, &best_counts, &rec_imgs, o, progress)?;
    phases.push(("reconstruction".to_string(), t1.elapsed().as_secs_f64()));
    let macs = pruned_macs_of(&pruned);
    let channels = pruned
        .blocks()
        .map(|b| (b.name.clone(), b.conv1.out_ch, b.conv2.out_ch))
        .collect();
    let ratios = net
        .blocks()
        .zip(&best_counts)
        .map(|(b, &(k1, _))| k1 as f64 / b.conv1.out_ch as f64)
        .collect();
    Ok((
        pruned,
        PruneSummary {
            ratios,
            macs,
            baseline_macs: base_macs,
            flops_fraction: macs as f64 / base_macs as f64,
            search,
            channels,
            phase_seconds: phases,
            block_fit,
        },
    ))
}
fn pruned_macs_of(net: &ResNet) -> u64 {
    net.macs(crate::INPUT_SIZE)
}

/// Re-exported for the report: the baseline's MACs and the pruned network's for some ratios.
pub use prune::pruned_macs;

/// Checks helpers used by tests and the CLI: every conv except the dense ones and the FC are 2:4.
pub fn is_24_network(net: &ResNet) -> bool {
    net.convs()
        .filter(|c| c.in_ch.is_multiple_of(sparse::GROUP))
        .all(sparse::conv_is_24)
        && sparse::is_24(&net.fc.weight)
}
