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

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, MatRef, Par, Side};
use serde::Serialize;

use super::forward::{im2col, Act};
use super::hessian::{self, Hessian};
use super::ordered;
use super::prune;
use crate::model::Conv;

/// Longest step taken along the Gauss–Newton direction (1 is the full step of the model).
const MAX_STEP: f64 = 2.0;

/// What one Gauss–Newton step on `conv2` did, on the sampled positions of the refit images.
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

/// Branch error `Σ ‖T − F‖² / Σ ‖T‖²` of `conv2` → `conv3` over `inputs` at the positions sampled for
/// `conv2` ([`conv2_gauss_newton`]'s measure).
pub fn branch_error(
    conv2: &Conv,
    conv3: &Conv,
    inputs: &[Act],
    target: &(dyn Fn(usize) -> Act + Sync),
    max_positions: usize,
    seed: u64,
) -> f64 {
    let (err, energy) = ordered::fold_ordered(
        inputs.len(),
        || (0.0, 0.0),
        |(err, energy), idx| {
            let s = sample(conv2, &inputs[idx], &target(idx), idx, max_positions, seed);
            let (r, _) = residual(conv3, &s);
            (
                err + f64::from(r.as_ref().squared_norm_l2()),
                energy
                    + s.target
                        .iter()
                        .map(|&v| f64::from(v) * f64::from(v))
                        .sum::<f64>(),
            )
        },
        |(a, b), (c, d)| (a + c, b + d),
    );
    err / energy.max(f64::MIN_POSITIVE)
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

/// Per image: `conv2`'s im2col columns at the sampled positions, its pre-ReLU output there, and the
/// target at the same positions.
struct Sample {
    cols: Vec<f32>,
    z: Mat<f32>,
    target: Vec<f32>,
    p: usize,
}

fn sample(
    conv2: &Conv,
    x: &Act,
    target: &Act,
    idx: usize,
    max_positions: usize,
    seed: u64,
) -> Sample {
    let out = conv2.out_size(x.h);
    assert_eq!(
        (target.h, target.w),
        (out, out),
        "{}: target map size",
        conv2.name
    );
    let pos = hessian::sample_positions(
        out * out,
        max_positions,
        hessian::position_seed(seed, &conv2.name, idx),
    );
    let cols = im2col(conv2, x, pos.as_deref());
    let n = conv2.fan_in();
    let p = cols.len() / n;
    let z = affine(
        &conv2.weight,
        &conv2.bias,
        conv2.out_ch,
        MatRef::from_row_major_slice(&cols, n, p),
    );
    Sample {
        cols,
        z,
        target: select(target, pos.as_deref()),
        p,
    }
}

/// Residual `T − W₃ relu(z) − b₃` (`o × p`) and the ReLU mask of `z`.
fn residual(conv3: &Conv, s: &Sample) -> (Mat<f32>, Mat<f32>) {
    let k = s.z.nrows();
    let mask = Mat::<f32>::from_fn(k, s.p, |r, c| if s.z[(r, c)] > 0.0 { 1.0 } else { 0.0 });
    let a = Mat::<f32>::from_fn(k, s.p, |r, c| s.z[(r, c)].max(0.0));
    let f = affine(&conv3.weight, &conv3.bias, conv3.out_ch, a.as_ref());
    let r = Mat::<f32>::from_fn(conv3.out_ch, s.p, |o, c| s.target[o * s.p + c] - f[(o, c)]);
    (r, mask)
}

/// One Gauss–Newton step on `conv2`'s weights toward the block output (module docs): `inputs` are
/// `conv2`'s inputs (the pruned network's `conv1` outputs), `target(i)` the branch target of image `i`
/// (`[conv3.out_ch, out, out]`: the baseline's block output before its ReLU minus the pruned network's
/// shortcut), `hx` `conv2`'s input Hessian at the positions sampled for `max_positions` and `seed`.
/// `conv3` is the pruned block's current `conv3` (its inputs are `conv2`'s kept outputs).
#[allow(clippy::too_many_arguments)]
pub fn conv2_gauss_newton(
    conv2: &mut Conv,
    conv3: &Conv,
    inputs: &[Act],
    target: &(dyn Fn(usize) -> Act + Sync),
    hx: &Hessian,
    max_positions: usize,
    seed: u64,
    damp: f64,
) -> Result<GnStep, String> {
    let (k, n) = (conv2.out_ch, conv2.fan_in());
    assert_eq!(conv3.in_ch, k, "conv3 reads conv2's outputs");
    assert_eq!(hx.dim(), n, "input Hessian of conv2");
    let w3 = MatRef::from_row_major_slice(&conv3.weight, conv3.out_ch, k);
    // Pass 1: the negative gradient, the masks' co-activation counts, the error.
    let (g, mm, err, energy, count) = ordered::fold_ordered(
        inputs.len(),
        || {
            (
                Mat::<f32>::zeros(k, n),
                Mat::<f32>::zeros(k, k),
                0f64,
                0f64,
                0usize,
            )
        },
        |(mut g, mut mm, mut err, mut energy, count), idx| {
            let s = sample(conv2, &inputs[idx], &target(idx), idx, max_positions, seed);
            let (r, mask) = residual(conv3, &s);
            err += f64::from(r.as_ref().squared_norm_l2());
            energy += s
                .target
                .iter()
                .map(|&v| f64::from(v) * f64::from(v))
                .sum::<f64>();
            let mut back = Mat::<f32>::zeros(k, s.p);
            matmul(
                back.as_mut(),
                Accum::Replace,
                w3.transpose(),
                &r,
                1.0f32,
                Par::Seq,
            );
            let back = Mat::<f32>::from_fn(k, s.p, |a, b| back[(a, b)] * mask[(a, b)]);
            let cols = MatRef::from_row_major_slice(&s.cols, n, s.p);
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
            (g, mm, err, energy, count + s.p)
        },
        |(g1, m1, e1, t1, c1), (g2, m2, e2, t2, c2)| (g1 + g2, m1 + m2, e1 + e2, t1 + t2, c1 + c2),
    );
    let energy = energy.max(f64::MIN_POSITIVE);
    // D = A⁻¹ G H⁻¹: first G H⁻¹ (the per-layer refit's damped solve), then A⁻¹ on the left.
    let g64 = Mat::<f64>::from_fn(k, n, |a, b| f64::from(g[(a, b)]));
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
    // Pass 2: the exact minimizer along D with the masks fixed: η = ⟨r, J D⟩ / ‖J D‖².
    let (num, den) = ordered::fold_ordered(
        inputs.len(),
        || (0f64, 0f64),
        |(mut num, mut den), idx| {
            let s = sample(conv2, &inputs[idx], &target(idx), idx, max_positions, seed);
            let (r, mask) = residual(conv3, &s);
            let mut dz = Mat::<f32>::zeros(k, s.p);
            let cols = MatRef::from_row_major_slice(&s.cols, n, s.p);
            matmul(dz.as_mut(), Accum::Replace, dm, cols, 1.0f32, Par::Seq);
            let da = Mat::<f32>::from_fn(k, s.p, |a, b| dz[(a, b)] * mask[(a, b)]);
            let mut jd = Mat::<f32>::zeros(conv3.out_ch, s.p);
            matmul(jd.as_mut(), Accum::Replace, w3, &da, 1.0f32, Par::Seq);
            for c in 0..s.p {
                for o in 0..conv3.out_ch {
                    let (rv, jv) = (f64::from(r[(o, c)]), f64::from(jd[(o, c)]));
                    num += rv * jv;
                    den += jv * jv;
                }
            }
            (num, den)
        },
        |(a, b), (c, d)| (a + c, b + d),
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
