//! 2:4 semi-structured sparsity: in every group of 4 consecutive weights along the input channels (for
//! a convolution `[O, I, kh, kw]`: 4 consecutive `i` at a fixed `(o, kh, kw)`, the NHWC layout sparse
//! tensor cores use), 2 are zero.
//!
//! Two ways to choose them: by magnitude (keep the 2 largest, no compensation), and SparseGPT (Frantar &
//! Alistarh 2023): with the layer Hessian `H = X Xᵀ` of calibration inputs, walk the columns in blocks,
//! pick each group's pair by the OBS saliency `w² / [H⁻¹]²_jj`, and spread each removed weight's error
//! onto the not yet processed weights of its row with the Cholesky factor of `H⁻¹`.
//!
//! Weights are handled as `O × K` row-major matrices whose columns are in *group order*: for a
//! convolution, `K = kh·kw·I` ordered `(y, x, i)`, so that a 2:4 group is 4 consecutive columns
//! ([`group_order`] gives the map to the OIHW layout).

use faer::linalg::matmul::matmul;
use faer::linalg::solvers::DenseSolveCore;
use faer::{Accum, Mat, Par, Side};
use rayon::prelude::*;

use super::hessian::Hessian;
use crate::model::Conv;

/// Group size (M of N:M) and kept weights per group (N).
pub const GROUP: usize = 4;
pub const KEEP: usize = 2;

/// Why a layer could not be sparsified.
#[derive(Debug, thiserror::Error)]
pub enum SparseError {
    #[error("{layer}: {in_ch} input channels are not a multiple of {GROUP}")]
    Channels { layer: String, in_ch: usize },
    #[error("{layer}: the damped Hessian is not positive definite ({reason})")]
    Cholesky { layer: String, reason: String },
}

/// For a convolution: `order[j]` is the OIHW column (`(i·k + y)·k + x`) of group-order column
/// `j = (y·k + x)·I + i`.
pub fn group_order(conv: &Conv) -> Vec<usize> {
    let (k, n_in) = (conv.kernel, conv.in_ch);
    let mut order = Vec::with_capacity(conv.fan_in());
    for y in 0..k {
        for x in 0..k {
            for i in 0..n_in {
                order.push((i * k + y) * k + x);
            }
        }
    }
    order
}

/// The weight as an `O × K` row-major matrix in group order.
pub fn to_group_order(conv: &Conv) -> Vec<f32> {
    let order = group_order(conv);
    let k = conv.fan_in();
    let mut out = vec![0f32; conv.weight.len()];
    for o in 0..conv.out_ch {
        for (j, &src) in order.iter().enumerate() {
            out[o * k + j] = conv.weight[o * k + src];
        }
    }
    out
}

/// Writes a group-order matrix back into the conv's OIHW weight.
pub fn from_group_order(conv: &mut Conv, w: &[f32]) {
    let order = group_order(conv);
    let k = conv.fan_in();
    for o in 0..conv.out_ch {
        for (j, &dst) in order.iter().enumerate() {
            conv.weight[o * k + dst] = w[o * k + j];
        }
    }
}

/// Checks that a conv can be made 2:4 along its input channels.
pub fn check_conv(conv: &Conv) -> Result<(), SparseError> {
    if !conv.in_ch.is_multiple_of(GROUP) {
        return Err(SparseError::Channels {
            layer: conv.name.clone(),
            in_ch: conv.in_ch,
        });
    }
    Ok(())
}

/// Magnitude 2:4 on a row-major matrix whose row length is a multiple of 4: in each group of 4
/// consecutive values the 2 smallest in magnitude become zero (ties: the earlier one is kept).
pub fn magnitude_24(w: &mut [f32]) {
    for g in w.chunks_exact_mut(GROUP) {
        let mut idx = [0usize, 1, 2, 3];
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()).then(a.cmp(&b)));
        for &i in &idx[KEEP..] {
            g[i] = 0.0;
        }
    }
}

/// Whether every group of 4 consecutive values has at most 2 nonzeros.
pub fn is_24(w: &[f32]) -> bool {
    w.len().is_multiple_of(GROUP)
        && w.chunks_exact(GROUP)
            .all(|g| g.iter().filter(|&&v| v != 0.0).count() <= KEEP)
}

/// Whether a conv's weight is 2:4 along its input channels.
pub fn conv_is_24(conv: &Conv) -> bool {
    conv.in_ch.is_multiple_of(GROUP) && is_24(&to_group_order(conv))
}

/// Magnitude 2:4 of a conv along its input channels.
pub fn magnitude_24_conv(conv: &mut Conv) -> Result<(), SparseError> {
    check_conv(conv)?;
    let mut w = to_group_order(conv);
    magnitude_24(&mut w);
    from_group_order(conv, &w);
    Ok(())
}

/// SparseGPT settings.
#[derive(Debug, Clone, Copy)]
pub struct SparseGptOptions {
    /// Dampening added to the Hessian's diagonal, as a fraction of its mean diagonal.
    pub damp: f64,
    /// Columns per lazy-update block (a multiple of 4).
    pub block: usize,
    /// Choose each group's pair by its joint OBS error (all 6 pairs tried with the updates inside the
    /// group) instead of the single-weight saliency `w² / [H⁻¹]²_jj`.
    pub group_obs: bool,
}

impl Default for SparseGptOptions {
    fn default() -> Self {
        SparseGptOptions {
            damp: 0.01,
            block: 128,
            group_obs: true,
        }
    }
}

/// The upper Cholesky factor `U` of `(H + λI)⁻¹` (`H⁻¹ = Uᵀ U`), as SparseGPT uses it. Dead inputs (zero
/// diagonal) get a unit diagonal; their weights should be zeroed by the caller.
pub fn inverse_cholesky_upper(h: &Hessian, damp: f64) -> Result<Mat<f64>, String> {
    let n = h.dim();
    let mut hm = h.h.clone();
    let mean_diag = (0..n).map(|i| hm[(i, i)]).sum::<f64>() / n.max(1) as f64;
    let lambda = damp * mean_diag.max(f64::MIN_POSITIVE);
    for i in 0..n {
        if hm[(i, i)] == 0.0 {
            hm[(i, i)] = 1.0;
        }
        hm[(i, i)] += lambda;
    }
    let inv = hm.llt(Side::Lower).map_err(|e| format!("{e:?}"))?.inverse();
    // Symmetrize against round-off before factoring again.
    let inv = Mat::from_fn(n, n, |i, j| 0.5 * (inv[(i, j)] + inv[(j, i)]));
    let l = inv.llt(Side::Lower).map_err(|e| format!("{e:?}"))?;
    Ok(l.L().transpose().to_owned())
}

/// SparseGPT 2:4 of a row-major `rows × cols` matrix `w` (columns in group order) given the Hessian of
/// its inputs (`cols × cols`, same order). Returns the weights with exactly 2 zeros chosen per group and
/// the others updated to compensate.
pub fn sparsegpt_24(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Hessian,
    opts: SparseGptOptions,
) -> Result<Vec<f32>, String> {
    assert_eq!(w.len(), rows * cols);
    assert_eq!(h.dim(), cols);
    assert!(cols.is_multiple_of(GROUP) && opts.block.is_multiple_of(GROUP) && opts.block > 0);
    let u = inverse_cholesky_upper(h, opts.damp)?;
    let dead: Vec<bool> = (0..cols).map(|i| h.h[(i, i)] == 0.0).collect();
    // Rows of W as f64, row-major, so that each row's sweep runs on contiguous memory.
    let mut wm: Vec<f64> = w.iter().map(|&v| f64::from(v)).collect();
    for r in 0..rows {
        for (c, &d) in dead.iter().enumerate() {
            if d {
                wm[r * cols + c] = 0.0;
            }
        }
    }
    let mut i1 = 0;
    while i1 < cols {
        let i2 = (i1 + opts.block).min(cols);
        let count = i2 - i1;
        let hinv1: Vec<f64> = (0..count * count)
            .map(|t| u[(i1 + t / count, i1 + t % count)])
            .collect();
        // Per row: sweep the block, choosing each group's mask and propagating errors inside the block.
        let mut err = vec![0f64; rows * count];
        wm.par_chunks_exact_mut(cols)
            .zip(err.par_chunks_exact_mut(count))
            .for_each(|(row, err)| {
                let w1 = &mut row[i1..i2];
                let mut pruned = [false; GROUP];
                for i in 0..count {
                    if i.is_multiple_of(GROUP) && opts.group_obs {
                        pruned = best_pair(&w1[i..i + GROUP], &hinv1, count, i);
                    } else if i.is_multiple_of(GROUP) {
                        let mut sal = [0f64; GROUP];
                        for j in 0..GROUP {
                            let d = hinv1[(i + j) * count + i + j];
                            sal[j] = w1[i + j] * w1[i + j] / (d * d);
                        }
                        let mut idx = [0usize, 1, 2, 3];
                        idx.sort_by(|&a, &b| sal[a].total_cmp(&sal[b]).then(a.cmp(&b)));
                        pruned = [false; GROUP];
                        for &j in &idx[..GROUP - KEEP] {
                            pruned[j] = true;
                        }
                    }
                    let wv = w1[i];
                    let q = if pruned[i % GROUP] { 0.0 } else { wv };
                    let e = (wv - q) / hinv1[i * count + i];
                    w1[i] = q;
                    err[i] = e;
                    if e != 0.0 {
                        let hrow = &hinv1[i * count..(i + 1) * count];
                        for j in i + 1..count {
                            w1[j] -= e * hrow[j];
                        }
                    }
                }
            });
        // Lazy update of the columns after the block: W[:, i2:] -= Err · U[i1:i2, i2:].
        if i2 < cols {
            let e = Mat::from_fn(rows, count, |r, c| err[r * count + c]);
            let mut delta = Mat::<f64>::zeros(rows, cols - i2);
            matmul(
                delta.as_mut(),
                Accum::Replace,
                &e,
                u.as_ref().submatrix(i1, i2, count, cols - i2),
                1.0,
                Par::rayon(0),
            );
            for r in 0..rows {
                for c in i2..cols {
                    wm[r * cols + c] -= delta[(r, c - i2)];
                }
            }
        }
        i1 = i2;
    }
    Ok(wm.into_iter().map(|v| v as f32).collect())
}

/// The 6 ways of zeroing 2 of 4.
const PAIRS: [[bool; GROUP]; 6] = [
    [true, true, false, false],
    [true, false, true, false],
    [true, false, false, true],
    [false, true, true, false],
    [false, true, false, true],
    [false, false, true, true],
];

/// The pair of a group (columns `i..i+4` of a block whose `count × count` upper factor of `H⁻¹` is
/// `u`) whose removal, with the OBS updates of the group's other weights, costs the least error
/// `Σ ((w_j − q_j) / U_jj)²`; ties keep the earlier pair.
fn best_pair(w: &[f64], u: &[f64], count: usize, i: usize) -> [bool; GROUP] {
    let mut best = (f64::INFINITY, PAIRS[0]);
    for mask in PAIRS {
        let mut g = [w[0], w[1], w[2], w[3]];
        let mut err = 0.0;
        for j in 0..GROUP {
            if !mask[j] {
                continue;
            }
            let d = u[(i + j) * count + i + j];
            let e = g[j] / d;
            err += e * e;
            g[j] = 0.0;
            for k in j + 1..GROUP {
                g[k] -= e * u[(i + j) * count + i + k];
            }
        }
        if err < best.0 {
            best = (err, mask);
        }
    }
    best.1
}

/// SparseGPT 2:4 of a convolution along its input channels, given the Hessian of its im2col inputs
/// (OIHW column order, as [`super::hessian::conv_hessian`] computes it).
pub fn sparsegpt_24_conv(
    conv: &mut Conv,
    h: &Hessian,
    opts: SparseGptOptions,
) -> Result<(), SparseError> {
    check_conv(conv)?;
    let order = group_order(conv);
    let hp = h.permuted(&order);
    let w = to_group_order(conv);
    let out = sparsegpt_24(&w, conv.out_ch, conv.fan_in(), &hp, opts).map_err(|reason| {
        SparseError::Cholesky {
            layer: conv.name.clone(),
            reason,
        }
    })?;
    from_group_order(conv, &out);
    Ok(())
}

/// `tr((W − W') H (W − W')ᵀ)`: the squared output error of replacing `w` by `w2` on the inputs behind
/// `h` (row-major `rows × cols`).
pub fn reconstruction_error(w: &[f32], w2: &[f32], rows: usize, cols: usize, h: &Hessian) -> f64 {
    let d = Mat::from_fn(rows, cols, |r, c| {
        f64::from(w[r * cols + c]) - f64::from(w2[r * cols + c])
    });
    let mut dh = Mat::<f64>::zeros(rows, cols);
    matmul(dh.as_mut(), Accum::Replace, &d, &h.h, 1.0, Par::Seq);
    (0..rows)
        .map(|r| (0..cols).map(|c| dh[(r, c)] * d[(r, c)]).sum::<f64>())
        .sum()
}
