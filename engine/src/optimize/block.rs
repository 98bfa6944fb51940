//! Block-level reconstruction for the pruned variant: refitting a bottleneck's `conv2` so that the
//! **block's output** matches the baseline's, not only `conv2`'s own (kept) output channels.
//!
//! The per-layer least-squares refit ([`super::build::prune_sequential`]) matches each kept layer's
//! output to the baseline's; the output channels `conv2` lost are left to `conv3` alone, which can only
//! recombine the channels `conv2` kept. Post-training structured pruning methods that look past one
//! layer (PSP and similar block or multi-layer output matching) let the inner layer change what it
//! computes so that the block, as a whole, reproduces the dense block.
//!
//! With `conv3` fixed and the ReLU masks `m` of `conv2`'s outputs fixed from the current pass, the
//! branch output `F = W₃ (m ⊙ (W₂ x + b₂)) + b₃` is linear in `W₂`, so the squared error to the target
//! `T` (the baseline's block output minus the pruned network's shortcut) is a quadratic in `W₂`. Its
//! Gauss–Newton matrix `Σₚ (xₚ xₚᵀ) ⊗ (Mₚ W₃ᵀW₃ Mₚ)` is approximated by the Kronecker product
//! `(Σₚ xₚ xₚᵀ) ⊗ (W₃ᵀW₃ ⊙ Σₚ mₚ mₚᵀ) / N` (the input Hessian the per-layer refit already uses, and
//! the output-side curvature with the masks' co-activation counts), which makes the step two small
//! solves: `D = A⁻¹ G H⁻¹` with `G = Σₚ (mₚ ⊙ W₃ᵀ rₚ) xₚᵀ` the negative gradient. The step length is
//! then the exact minimizer of the quadratic along `D` (masks fixed), clamped to `[0, 2]`, and the
//! caller refits `conv3` to the block output again by least squares: an alternating refit of the
//! block. Every sum runs over the output positions [`hessian::conv_hessian`] samples for `conv2` (same
//! `max_positions` and seed), so the input Hessian of the per-layer refit is reused as it is.
//!
//! Cost (issue 16, session 13): the targets at the sampled positions are computed once per block
//! ([`BranchTargets`]) instead of on every pass, `conv2`'s outputs come from the caller's forward
//! pass (the one `conv3`'s refit needs anyway) instead of a product per pass, the step length's
//! numerator is `⟨G, D⟩` (no pass) and its denominator `Σ ⟨m ⊙ D x, W₃ᵀW₃ (m ⊙ D x)⟩`; the steps
//! may run on the first `images` of the refit images only ([`BranchTargets::new`]).

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, MatRef, Par, Side};
use rayon::prelude::*;
use serde::Serialize;

use super::forward::{im2col, Act};
use super::hessian::{self, Hessian};
use super::ordered;
use super::prune;
use crate::model::Conv;

/// Longest step taken along the Gauss–Newton direction (1 is the full step of the model).
const MAX_STEP: f64 = 2.0;

/// What one Gauss–Newton step on `conv2` did, on the sampled positions of the images the steps see.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct GnStep {
    /// Branch error `Σ ‖T − F‖²` before the step, relative to `Σ ‖T‖²`.
    pub before: f64,
    /// The same error predicted after the step (masks fixed; the quadratic's minimum along `D`).
    pub predicted: f64,
    /// Step length taken along the Gauss–Newton direction (`0` when it would not help).
    pub step: f64,
    /// The error measured once `conv3` is refitted after the step ([`branch_error`]; the caller's
    /// to fill: `predicted` until then).
    pub after: f64,
}

/// The branch target of a block at the output positions sampled for its `conv2`, one entry per
/// image the steps see: computed once per block and reused by every pass of every step.
pub struct BranchTargets {
    /// Per image: the sampled positions of `conv2`'s output map (`None`: all).
    pos: Vec<Option<Vec<usize>>>,
    /// Per image: the target at those positions, row-major `channels × p`.
    t: Vec<Vec<f32>>,
    /// Target channels (`conv3`'s outputs).
    channels: usize,
    /// `Σ ‖T‖²` over every image, summed in image order.
    energy: f64,
}

impl BranchTargets {
    /// Targets for the first `images` of `inputs`: `target_conv` (the baseline's `conv3`, bias
    /// included, no ReLU) applied to its inputs `inputs` (the baseline's `conv2` outputs) at the
    /// positions sampled for `conv2` (`max_positions`, `seed`), plus `offsets` (the shortcut's drift)
    /// at the same positions.
    pub fn new(
        conv2: &Conv,
        target_conv: &Conv,
        inputs: &[Act],
        offsets: Option<&[Act]>,
        images: usize,
        max_positions: usize,
        seed: u64,
    ) -> Self {
        assert!(
            target_conv.kernel == 1 && target_conv.stride == 1 && target_conv.pad == 0,
            "{}: the branch's last conv is 1×1",
            target_conv.name
        );
        let m = images.min(inputs.len());
        let out = target_conv.out_ch;
        let (pos, t): (Vec<_>, Vec<_>) = (0..m)
            .into_par_iter()
            .map(|i| {
                let x = &inputs[i];
                let pos = hessian::sample_positions(
                    x.positions(),
                    max_positions,
                    hessian::position_seed(seed, &conv2.name, i),
                );
                let xs = select(x, pos.as_deref());
                let p = xs.len() / x.c;
                let y = affine(
                    &target_conv.weight,
                    &target_conv.bias,
                    out,
                    MatRef::from_row_major_slice(&xs, x.c, p),
                );
                let off = offsets.map(|o| select(&o[i], pos.as_deref()));
                let t: Vec<f32> = (0..out)
                    .flat_map(|o| (0..p).map(move |c| (o, c)))
                    .map(|(o, c)| y[(o, c)] + off.as_ref().map_or(0.0, |v| v[o * p + c]))
                    .collect();
                (pos, t)
            })
            .unzip();
        Self::finish(pos, t, out)
    }

    /// Targets from whole target maps (`[channels, out, out]` per image): the values at the positions
    /// sampled for `conv2`.
    pub fn from_maps(conv2: &Conv, maps: &[Act], max_positions: usize, seed: u64) -> Self {
        let channels = maps.first().map_or(0, |a| a.c);
        let (pos, t): (Vec<_>, Vec<_>) = maps
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let pos = hessian::sample_positions(
                    a.positions(),
                    max_positions,
                    hessian::position_seed(seed, &conv2.name, i),
                );
                let t = select(a, pos.as_deref());
                (pos, t)
            })
            .unzip();
        Self::finish(pos, t, channels)
    }

    fn finish(pos: Vec<Option<Vec<usize>>>, t: Vec<Vec<f32>>, channels: usize) -> Self {
        let energy = t
            .iter()
            .map(|v| v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
            .sum();
        BranchTargets {
            pos,
            t,
            channels,
            energy,
        }
    }

    /// Images the targets cover (the first of the refit images).
    pub fn len(&self) -> usize {
        self.t.len()
    }

    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    fn positions(&self, idx: usize) -> usize {
        self.t[idx].len() / self.channels.max(1)
    }
}

/// Branch error `Σ ‖T − F‖² / Σ ‖T‖²` of `conv3` over `outputs` (`conv2`'s current outputs, after its
/// ReLU) at the positions of `targets` ([`conv2_gauss_newton`]'s measure).
pub fn branch_error(conv3: &Conv, outputs: &[Act], targets: &BranchTargets) -> f64 {
    let err = ordered::fold_ordered(
        targets.len(),
        || 0.0,
        |err, idx| {
            let (r, _) = residual(conv3, &outputs[idx], targets, idx);
            err + f64::from(r.as_ref().squared_norm_l2())
        },
        |a, b| a + b,
    );
    err / targets.energy.max(f64::MIN_POSITIVE)
}

/// Values of `a` (`[rows, out·out]`) at the positions `pos` (all when `None`), row-major `rows × p`.
fn select(a: &Act, pos: Option<&[usize]>) -> Vec<f32> {
    match pos {
        None => a.data.clone(),
        Some(ps) => {
            let n = a.positions();
            (0..a.c)
                .flat_map(|c| ps.iter().map(move |&q| a.data[c * n + q]))
                .collect()
        }
    }
}

/// `W x + b` for a row-major weight `rows × n` and columns `x` (`n × p`): row-major `rows × p`.
fn affine(w: &[f32], bias: &[f32], rows: usize, x: MatRef<'_, f32>) -> Mat<f32> {
    let wm = MatRef::from_row_major_slice(w, rows, x.nrows());
    let mut y = Mat::<f32>::from_fn(rows, x.ncols(), |r, _| bias[r]);
    matmul(y.as_mut(), Accum::Add, wm, x, 1.0f32, Par::Seq);
    y
}

/// Residual `T − W₃ a − b₃` (`o × p`) of image `idx` at its sampled positions, where `a` are
/// `conv2`'s outputs there (after the ReLU), and the ReLU mask of `conv2`'s outputs (`k × p`).
fn residual(
    conv3: &Conv,
    output: &Act,
    targets: &BranchTargets,
    idx: usize,
) -> (Mat<f32>, Mat<f32>) {
    let k = conv3.in_ch;
    assert_eq!(output.c, k, "{}: conv2's outputs", conv3.name);
    let p = targets.positions(idx);
    let a = select(output, targets.pos[idx].as_deref());
    assert_eq!(a.len(), k * p, "{}: sampled positions", conv3.name);
    let am = MatRef::from_row_major_slice(&a, k, p);
    let mask = Mat::<f32>::from_fn(k, p, |r, c| if am[(r, c)] > 0.0 { 1.0 } else { 0.0 });
    let f = affine(&conv3.weight, &conv3.bias, conv3.out_ch, am);
    let t = &targets.t[idx];
    let r = Mat::<f32>::from_fn(conv3.out_ch, p, |o, c| t[o * p + c] - f[(o, c)]);
    (r, mask)
}

/// One Gauss–Newton step on `conv2`'s weights toward the block output (module docs): `inputs` are
/// `conv2`'s inputs (the pruned network's `conv1` outputs), `outputs` `conv2`'s current outputs on
/// them (after its ReLU), `targets` the branch targets of the first images ([`BranchTargets`]: the
/// baseline's block output before its ReLU minus the pruned network's shortcut), `hx` `conv2`'s input
/// Hessian at the same sampled positions, over these images or more (the step is scaled to the
/// images it sees). `conv3` is the pruned block's current `conv3` (its inputs are `conv2`'s kept
/// outputs).
pub fn conv2_gauss_newton(
    conv2: &mut Conv,
    conv3: &Conv,
    inputs: &[Act],
    outputs: &[Act],
    targets: &BranchTargets,
    hx: &Hessian,
    damp: f64,
) -> Result<GnStep, String> {
    let (k, n) = (conv2.out_ch, conv2.fan_in());
    assert_eq!(conv3.in_ch, k, "conv3 reads conv2's outputs");
    assert_eq!(
        conv3.out_ch, targets.channels,
        "conv3's outputs are the target's"
    );
    assert_eq!(hx.dim(), n, "input Hessian of conv2");
    assert!(targets.len() <= inputs.len() && targets.len() <= outputs.len());
    let w3 = MatRef::from_row_major_slice(&conv3.weight, conv3.out_ch, k);
    // Pass 1: the negative gradient, the masks' co-activation counts, the error.
    let (g, mm, err, count) = ordered::fold_ordered(
        targets.len(),
        || {
            (
                Mat::<f32>::zeros(k, n),
                Mat::<f32>::zeros(k, k),
                0f64,
                0usize,
            )
        },
        |(mut g, mut mm, mut err, count), idx| {
            let (r, mask) = residual(conv3, &outputs[idx], targets, idx);
            let p = r.ncols();
            err += f64::from(r.as_ref().squared_norm_l2());
            let mut back = Mat::<f32>::zeros(k, p);
            matmul(
                back.as_mut(),
                Accum::Replace,
                w3.transpose(),
                &r,
                1.0f32,
                Par::Seq,
            );
            let back = Mat::<f32>::from_fn(k, p, |a, b| back[(a, b)] * mask[(a, b)]);
            let cols = im2col(conv2, &inputs[idx], targets.pos[idx].as_deref());
            let cols = MatRef::from_row_major_slice(&cols, n, p);
            matmul(
                g.as_mut(),
                Accum::Add,
                &back,
                cols.transpose(),
                1.0f32,
                Par::Seq,
            );
            matmul(
                mm.as_mut(),
                Accum::Add,
                &mask,
                mask.transpose(),
                1.0f32,
                Par::Seq,
            );
            (g, mm, err, count + p)
        },
        |(g1, m1, e1, c1), (g2, m2, e2, c2)| (g1 + g2, m1 + m2, e1 + e2, c1 + c2),
    );
    let energy = targets.energy.max(f64::MIN_POSITIVE);
    // D = A⁻¹ G H⁻¹: first G H⁻¹ (the per-layer refit's damped solve), then A⁻¹ on the left. `hx`
    // sums over `hx.samples` positions, `G` over `count`: on fewer images than `hx` saw, the Hessian of
    // these images is taken as `hx · count / samples`.
    let scale = hx.samples as f64 / count.max(1) as f64;
    let g64 = Mat::<f64>::from_fn(k, n, |a, b| f64::from(g[(a, b)]) * scale);
    let gh = prune::solve_normal(g64.as_ref(), hx.h.as_ref(), damp)?;
    let mut b33 = Mat::<f64>::zeros(k, k);
    let w3d = Mat::<f64>::from_fn(conv3.out_ch, k, |a, b| f64::from(w3[(a, b)]));
    matmul(
        b33.as_mut(),
        Accum::Replace,
        w3d.transpose(),
        &w3d,
        1.0,
        Par::rayon(0),
    );
    // The output-side factor is an average over positions (the input side, `hx`, is the sum).
    let per = 1.0 / count.max(1) as f64;
    let a = Mat::<f64>::from_fn(k, k, |i, j| b33[(i, j)] * f64::from(mm[(i, j)]) * per);
    let mean = (0..k).map(|i| a[(i, i)]).sum::<f64>() / k.max(1) as f64;
    let lambda = damp * mean.max(f64::MIN_POSITIVE);
    let ad = Mat::<f64>::from_fn(k, k, |i, j| {
        a[(i, j)]
            + if i == j {
                lambda + if a[(i, i)] == 0.0 { 1.0 } else { 0.0 }
            } else {
                0.0
            }
    });
    let mut d = Mat::<f64>::from_fn(k, n, |r, c| f64::from(gh[r * n + c]));
    ad.llt(Side::Lower)
        .map_err(|e| format!("{}: Gauss–Newton step: {e:?}", conv2.name))?
        .solve_in_place(d.as_mut());
    let d32: Vec<f32> = (0..k)
        .flat_map(|r| (0..n).map(move |c| (r, c)))
        .map(|(r, c)| d[(r, c)] as f32)
        .collect();
    let dm = MatRef::from_row_major_slice(&d32, k, n);
    // The exact minimizer along D with the masks fixed: η = ⟨r, J D⟩ / ‖J D‖², where
    // ⟨r, J D⟩ = Σₚ ⟨mₚ ⊙ W₃ᵀ rₚ, D xₚ⟩ = ⟨G, D⟩ and ‖J D‖² = Σₚ ⟨mₚ ⊙ D xₚ, W₃ᵀW₃ (mₚ ⊙ D xₚ)⟩.
    let num: f64 = (0..k)
        .flat_map(|r| (0..n).map(move |c| (r, c)))
        .map(|(r, c)| f64::from(g[(r, c)]) * f64::from(dm[(r, c)]))
        .sum();
    let b33f = Mat::<f32>::from_fn(k, k, |i, j| b33[(i, j)] as f32);
    // Pass 2: ‖J D‖².
    let den = ordered::fold_ordered(
        targets.len(),
        || 0f64,
        |mut den, idx| {
            let pos = targets.pos[idx].as_deref();
            let p = targets.positions(idx);
            let a = select(&outputs[idx], pos);
            let cols = im2col(conv2, &inputs[idx], pos);
            let cols = MatRef::from_row_major_slice(&cols, n, p);
            let mut dz = Mat::<f32>::zeros(k, p);
            matmul(dz.as_mut(), Accum::Replace, dm, cols, 1.0f32, Par::Seq);
            let da = Mat::<f32>::from_fn(
                k,
                p,
                |r, c| {
                    if a[r * p + c] > 0.0 {
                        dz[(r, c)]
                    } else {
                        0.0
                    }
                },
            );
            let mut q = Mat::<f32>::zeros(k, p);
            matmul(q.as_mut(), Accum::Replace, &b33f, &da, 1.0f32, Par::Seq);
            for c in 0..p {
                for r in 0..k {
                    den += f64::from(da[(r, c)]) * f64::from(q[(r, c)]);
                }
            }
            den
        },
        |a, b| a + b,
    );
    let step = if den > 0.0 {
        (num / den).clamp(0.0, MAX_STEP)
    } else {
        0.0
    };
    let predicted = err - 2.0 * step * num + step * step * den;
    for (w, dv) in conv2.weight.iter_mut().zip(&d32) {
        *w += (step as f32) * dv;
    }
    let predicted = predicted.max(0.0) / energy;
    Ok(GnStep {
        before: err / energy,
        predicted,
        step,
        after: predicted,
    })
}
