//! Structured pruning of the bottleneck blocks' inner channels (the outputs of `conv1` and `conv2`), with
//! physically smaller tensors, channel choice by group Optimal Brain Surgeon on calibration activations
//! and least-squares reconstruction of the next layer (one-shot, no training).
//!
//! For a block, removing output channel `c` of `conv1` removes input channel `c` (9 weights per output
//! of the 3×3 `conv2`); removing output channel `c` of `conv2` removes input channel `c` of `conv3`. Which
//! channels go is decided on the next layer: with `H = X Xᵀ` of its calibration inputs, the channels are
//! removed greedily, in chunks, by the smallest OBS saliency `Σ_o w_oG [H⁻¹]_GG⁻¹ w_ogᵀ`, updating `W` and
//! `H⁻¹` after each chunk (as in ZipLM). The survivors' next-layer weights are then refitted by least
//! squares so that its output matches the baseline's: `W' = W_target C H'⁻¹` with `C` the cross product
//! of baseline and pruned inputs.

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;

use super::hessian::Hessian;
use crate::model::{Bottleneck, Conv, ResNet};

/// Default multiple of the kept channel counts: 32, the channel tile of the GPU engine's kernels (issue 16;
/// 8 before, then 16), also a whole number of the CPU's SIMD widths. A builder option
/// ([`super::build::PruneOptions`]).
pub const CHANNEL_MULTIPLE: usize = 32;

/// No inner layer is pruned below this many channels (or its full width when narrower): with multiples of
/// 32, `layer1`'s 64-channel convs would otherwise be offered 32 channels, half a GPU tile pass per
/// output pixel for the cheapest layers of the network; they stay whole.
pub const MIN_CHANNELS: usize = 64;

/// `round(ratio · full)` to a multiple of `multiple`, at least one multiple and at least
/// `min(full, MIN_CHANNELS)`, at most `full`.
pub fn kept_channels(ratio: f64, full: usize, multiple: usize) -> usize {
    let m = multiple.max(1);
    let k = ((ratio * full as f64 / m as f64).round() as usize * m)
        .max(m)
        .max(MIN_CHANNELS.min(full));
    k.min(full)
}

/// Input side of every bottleneck block (in graph order) for a 224×224 image.
pub fn block_input_sizes(net: &ResNet) -> Vec<usize> {
    let s = net.stem.out_size(crate::INPUT_SIZE);
    let mut s = (s + 2 - 3) / 2 + 1;
    net.blocks()
        .map(|b| {
            let here = s;
            s = b.conv2.out_size(b.conv1.out_size(s));
            here
        })
        .collect()
}

/// MACs of a block (shortcut included) at input side `in_size` when `k1` outputs of `conv1` and `k2`
/// of `conv2` are kept.
pub fn block_macs(b: &Bottleneck, in_size: usize, k1: usize, k2: usize) -> u64 {
    let s1 = b.conv1.out_size(in_size) as u64;
    let s2 = b.conv2.out_size(s1 as usize) as u64;
    let kk = (b.conv2.kernel * b.conv2.kernel) as u64;
    let (k1, k2) = (k1 as u64, k2 as u64);
    s1 * s1 * k1 * b.conv1.in_ch as u64
        + s2 * s2 * k2 * k1 * kk
        + s2 * s2 * b.conv3.out_ch as u64 * k2
        + b.downsample.as_ref().map_or(0, |d| d.macs(in_size))
}

/// Keeps the output channels `keep` (ascending) of a convolution.
pub fn keep_outputs(conv: &mut Conv, keep: &[usize]) {
    let per = conv.fan_in();
    conv.weight = keep
        .iter()
        .flat_map(|&o| conv.weight[o * per..(o + 1) * per].iter().copied())
        .collect();
    conv.bias = keep.iter().map(|&o| conv.bias[o]).collect();
    conv.out_ch = keep.len();
}

/// Keeps the input channels `keep` (ascending) of a convolution.
pub fn keep_inputs(conv: &mut Conv, keep: &[usize]) {
    let kk = conv.kernel * conv.kernel;
    let mut w = Vec::with_capacity(conv.out_ch * keep.len() * kk);
    for o in 0..conv.out_ch {
        for &i in keep {
            let start = (o * conv.in_ch + i) * kk;
            w.extend_from_slice(&conv.weight[start..start + kk]);
        }
    }
    conv.weight = w;
    conv.in_ch = keep.len();
}

/// Removes inner channels of a block: keeps outputs `keep1` of `conv1` (inputs of `conv2`) and outputs
/// `keep2` of `conv2` (inputs of `conv3`), weights unchanged otherwise.
pub fn remove_inner_channels(b: &mut Bottleneck, keep1: &[usize], keep2: &[usize]) {
    keep_outputs(&mut b.conv1, keep1);
    keep_inputs(&mut b.conv2, keep1);
    keep_outputs(&mut b.conv2, keep2);
    keep_inputs(&mut b.conv3, keep2);
}

/// The kept channels (ascending) when `count` of them stay, given the removal order (least important
/// first; channels missing from it are removed last).
pub fn kept_from_order(order: &[usize], channels: usize, count: usize) -> Vec<usize> {
    let mut removed = vec![false; channels];
    let mut full: Vec<usize> = order.to_vec();
    full.extend((0..channels).filter(|c| !order.contains(c)));
    for &c in &full[..channels.saturating_sub(count)] {
        removed[c] = true;
    }
    (0..channels).filter(|&c| !removed[c]).collect()
}

fn damped_inverse(h: MatRef<'_, f64>, damp: f64) -> Result<Mat<f64>, String> {
    let n = h.nrows();
    let mean = (0..n).map(|i| h[(i, i)]).sum::<f64>() / n.max(1) as f64;
    let lambda = damp * mean.max(f64::MIN_POSITIVE);
    let hm = Mat::from_fn(n, n, |i, j| {
        let d = if i == j {
            lambda + if h[(i, i)] == 0.0 { 1.0 } else { 0.0 }
        } else {
            0.0
        };
        h[(i, j)] + d
    });
    Ok(hm.llt(Side::Lower).map_err(|e| format!("{e:?}"))?.inverse())
}

/// How [`obs_removal_order`] removes column groups.
#[derive(Debug, Clone, Copy)]
pub struct ObsSchedule {
    /// Columns per group (`k·k` for a convolution's input channel).
    pub group: usize,
    /// Groups left when the order stops.
    pub min_keep: usize,
    /// Groups removed per step.
    pub chunk: usize,
    /// Hessian dampening, relative to its mean diagonal.
    pub damp: f64,
}

/// Greedy group-OBS removal order of the `ng = cols / group` column groups of a row-major `rows × cols`
/// weight (group `g` = columns `g·group..(g+1)·group`), until `min_keep` groups remain; `chunk` groups
/// are removed per step.
pub fn obs_removal_order(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    sched: ObsSchedule,
) -> Result<Vec<usize>, String> {
    Ok(obs_removal(w, rows, cols, h, sched)?.order)
}

/// A greedy OBS removal order with the error it costs.
#[derive(Debug, Clone)]
pub struct Removal {
    /// Column groups, least important first.
    pub order: Vec<usize>,
    /// `error[n]`: the layer's squared output error `tr(ΔW H ΔWᵀ)` (with the OBS updates of the
    /// remaining weights) once the first `n` groups of `order` are removed (`error[0] = 0`); inside a
    /// chunk removed jointly, interpolated linearly.
    pub error: Vec<f64>,
}

/// [`obs_removal_order`] with the cumulative error of every prefix of the order (the per-layer error
/// table of the keep-ratio search).
pub fn obs_removal(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    sched: ObsSchedule,
) -> Result<Removal, String> {
    let ObsSchedule {
        group,
        min_keep,
        chunk,
        damp,
    } = sched;
    assert_eq!(cols % group, 0);
    assert_eq!(h.dim(), cols);
    let ng = cols / group;
    let mut hinv = damped_inverse(h.h.as_ref(), damp)?;
    let mut wm = Mat::from_fn(rows, cols, |r, c| f64::from(w[r * cols + c]));
    let mut alive = vec![true; ng];
    let mut order = Vec::new();
    let mut error = vec![0.0f64];
    while order.len() + min_keep < ng {
        let sal: Vec<(f64, usize)> = (0..ng)
            .into_par_iter()
            .filter(|&g| alive[g])
            .map(|g| {
                let s = g * group;
                let block = hinv.as_ref().submatrix(s, s, group, group).to_owned();
                let m = match block.llt(Side::Lower) {
                    Ok(l) => l.inverse(),
                    Err(_) => return (f64::INFINITY, g),
                };
                let wg = wm.as_ref().submatrix(0, s, rows, group);
                let mut t = Mat::<f64>::zeros(rows, group);
                matmul(t.as_mut(), Accum::Replace, wg, &m, 1.0, Par::Seq);
                let sal = (0..rows)
                    .map(|r| (0..group).map(|j| t[(r, j)] * wg[(r, j)]).sum::<f64>())
                    .sum::<f64>();
                (sal, g)
            })
            .collect();
        let mut sal = sal;
        sal.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let take = chunk.max(1).min(ng - min_keep - order.len());
        let picked: Vec<usize> = sal[..take].iter().map(|s| s.1).collect();
        // Joint OBS update for the picked groups G: W -= W_G [H⁻¹]_GG⁻¹ H⁻¹_G: ; H⁻¹ -= H⁻¹_:G [H⁻¹]_GG⁻¹ H⁻¹_G:.
        let idx: Vec<usize> = picked
            .iter()
            .flat_map(|&g| g * group..(g + 1) * group)
            .collect();
        let k = idx.len();
        let hgg = Mat::from_fn(k, k, |a, b| hinv[(idx[a], idx[b])]);
        let m = match hgg.llt(Side::Lower) {
            Ok(l) => l.inverse(),
            Err(e) => return Err(format!("group OBS: {e:?}")),
        };
        let hg_rows = Mat::from_fn(k, cols, |a, c| hinv[(idx[a], c)]);
        let mut t = Mat::<f64>::zeros(k, cols);
        matmul(t.as_mut(), Accum::Replace, &m, &hg_rows, 1.0, Par::rayon(0));
        let wg = Mat::from_fn(rows, k, |r, a| wm[(r, idx[a])]);
        // The chunk's joint OBS error: Σ_r w_rG [H⁻¹]_GG⁻¹ w_rGᵀ.
        let mut wm_g = Mat::<f64>::zeros(rows, k);
        matmul(wm_g.as_mut(), Accum::Replace, &wg, &m, 1.0, Par::rayon(0));
        let chunk_err: f64 = (0..rows)
            .map(|r| (0..k).map(|a| wm_g[(r, a)] * wg[(r, a)]).sum::<f64>())
            .sum();
        let last = *error.last().expect("starts with 0");
        for j in 1..=picked.len() {
            error.push(last + chunk_err * j as f64 / picked.len() as f64);
        }
        matmul(wm.as_mut(), Accum::Add, &wg, &t, -1.0, Par::rayon(0));
        let hg_cols = hg_rows.transpose().to_owned();
        matmul(hinv.as_mut(), Accum::Add, &hg_cols, &t, -1.0, Par::rayon(0));
        for &c in &idx {
            for r in 0..rows {
                wm[(r, c)] = 0.0;
            }
        }
        for g in picked {
            alive[g] = false;
            order.push(g);
        }
    }
    Ok(Removal { order, error })
}

/// Least squares `argmin_W' ‖W_t X − W' X̂‖²` = `W_t C (H + λI)⁻¹` with `C = X X̂ᵀ` (`m × n`),
/// `H = X̂ X̂ᵀ` (`n × n`), `W_t` row-major `rows × m`. Returns `W'` row-major `rows × n`.
pub fn least_squares(
    w_t: &[f32],
    rows: usize,
    cross: MatRef<'_, f64>,
    h: MatRef<'_, f64>,
    damp: f64,
) -> Result<Vec<f32>, String> {
    let m = cross.nrows();
    assert_eq!(w_t.len(), rows * m);
    let wt = Mat::from_fn(rows, m, |r, c| f64::from(w_t[r * m + c]));
    let mut a = Mat::<f64>::zeros(rows, cross.ncols());
    matmul(a.as_mut(), Accum::Replace, &wt, cross, 1.0, Par::rayon(0));
    solve_normal(a.as_ref(), h, damp)
}

/// `A (H + λI)⁻¹` for the normal equations of a least squares `argmin_W' ‖T − W' X̂‖²` with
/// `A = T X̂ᵀ` (`rows × n`) and `H = X̂ X̂ᵀ` (`n × n`); `λ` is `damp` times the mean diagonal (dead inputs
/// get a unit diagonal). Returns `W'` row-major `rows × n`.
pub fn solve_normal(a: MatRef<'_, f64>, h: MatRef<'_, f64>, damp: f64) -> Result<Vec<f32>, String> {
    solve_normal_toward(a, h, damp, None)
}

/// [`solve_normal`] with the ridge pulling toward `prior` (row-major `rows × n`) instead of zero:
/// `argmin_W' ‖T − W' X̂‖² + λ‖W' − W₀‖²` = `(A + λ W₀)(H + λI)⁻¹`. With the layer's own weights as
/// `W₀`, a layer whose inputs did not drift (`A = W₀ H`) keeps its weights exactly, where the ridge
/// toward zero shrinks them along every direction of small input variance.
pub fn solve_normal_toward(
    a: MatRef<'_, f64>,
    h: MatRef<'_, f64>,
    damp: f64,
    prior: Option<&[f32]>,
) -> Result<Vec<f32>, String> {
    let (rows, n) = (a.nrows(), a.ncols());
    assert_eq!(h.nrows(), n);
    // Solved in place: H' Wᵀ = Aᵀ.
    let mut at = a.transpose().to_owned();
    let mean = (0..n).map(|i| h[(i, i)]).sum::<f64>() / n.max(1) as f64;
    let lambda = damp * mean.max(f64::MIN_POSITIVE);
    if let Some(w0) = prior {
        assert_eq!(w0.len(), rows * n, "prior weights: rows × n");
        for r in 0..rows {
            for c in 0..n {
                at[(c, r)] += lambda * f64::from(w0[r * n + c]);
            }
        }
    }
    let hm = Mat::from_fn(n, n, |i, j| {
        h[(i, j)]
            + if i == j {
                lambda + if h[(i, i)] == 0.0 { 1.0 } else { 0.0 }
            } else {
                0.0
            }
    });
    let llt = hm
        .llt(Side::Lower)
        .map_err(|e| format!("least squares: {e:?}"))?;
    llt.solve_in_place(at.as_mut());
    let mut out = vec![0f32; rows * n];
    for r in 0..rows {
        for c in 0..n {
            out[r * n + c] = at[(c, r)] as f32;
        }
    }
    Ok(out)
}

/// Column indices (OIHW order) of input channels `keep` in a conv with `kk = k·k` weights per channel.
pub fn input_columns(keep: &[usize], kk: usize) -> Vec<usize> {
    keep.iter().flat_map(|&i| i * kk..(i + 1) * kk).collect()
}

/// Per-stage keep ratios of the inner channels.
pub type KeepRatios = [f64; 4];

/// The network's shapes after pruning with `ratios` (weights left empty): for FLOP counting.
pub fn pruned_shapes(net: &ResNet, ratios: &KeepRatios, multiple: usize) -> ResNet {
    let strip = |c: &Conv| Conv {
        weight: Vec::new(),
        bias: Vec::new(),
        ..c.clone()
    };
    let mut s = ResNet {
        input_offset: net.input_offset,
        stem: strip(&net.stem),
        stages: net
            .stages
            .iter()
            .map(|st| {
                st.iter()
                    .map(|b| Bottleneck {
                        name: b.name.clone(),
                        conv1: strip(&b.conv1),
                        conv2: strip(&b.conv2),
                        conv3: strip(&b.conv3),
                        downsample: b.downsample.as_ref().map(strip),
                    })
                    .collect()
            })
            .collect(),
        fc: crate::model::Linear {
            weight: Vec::new(),
            bias: Vec::new(),
            ..net.fc.clone()
        },
        quant: None,
    };
    for (st, &r) in s.stages.iter_mut().zip(ratios) {
        for b in st {
            let k1 = kept_channels(r, b.conv1.out_ch, multiple);
            let k2 = kept_channels(r, b.conv2.out_ch, multiple);
            b.conv1.out_ch = k1;
            b.conv2.in_ch = k1;
            b.conv2.out_ch = k2;
            b.conv3.in_ch = k2;
        }
    }
    s
}

/// MACs per 224×224 image after pruning with `ratios`.
pub fn pruned_macs(net: &ResNet, ratios: &KeepRatios, multiple: usize) -> u64 {
    pruned_shapes(net, ratios, multiple).macs(crate::INPUT_SIZE)
}

/// Ratios `clamp(α · profile, lo, 1)` with the largest `α` whose MACs fit `budget` (bisection; MACs
/// grow with `α`). `None` if even the smallest ratios do not fit.
pub fn fit_profile(
    net: &ResNet,
    profile: &KeepRatios,
    lo: f64,
    budget: u64,
    multiple: usize,
) -> Option<KeepRatios> {
    let ratios = |a: f64| profile.map(|p| (a * p).clamp(lo, 1.0));
    if pruned_macs(net, &ratios(0.0), multiple) > budget {
        return None;
    }
    let (mut a, mut b) = (
        0.0,
        1.0 / profile
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .max(1e-3),
    );
    if pruned_macs(net, &ratios(b), multiple) <= budget {
        return Some(ratios(b));
    }
    for _ in 0..50 {
        let mid = 0.5 * (a + b);
        if pruned_macs(net, &ratios(mid), multiple) <= budget {
            a = mid;
        } else {
            b = mid;
        }
    }
    Some(ratios(a))
}
