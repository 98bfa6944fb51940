//! Layer Hessians `H = X Xᵀ` of the squared reconstruction error `‖W X − W' X‖²`, from calibration
//! inputs (im2col columns of a convolution, feature vectors of the FC layer).

use std::ops::Range;

use super::forward::{im2col_into, Act};
use super::ordered;
use crate::model::Conv;
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatRef, Par};
use rand::seq::index::sample;
use rand::SeedableRng;

/// `X Xᵀ` (and, for pruning, the cross term with reference inputs), summed over `samples` columns.
#[derive(Debug, Clone)]
pub struct Hessian {
    /// `n × n`, column-major (symmetric).
    pub h: Mat<f64>,
    /// Columns of `X` summed.
    pub samples: usize,
}

impl Hessian {
    pub fn dim(&self) -> usize {
        self.h.nrows()
    }

    /// The Hessian with rows and columns reordered: `out[a, b] = h[perm[a], perm[b]]`.
    pub fn permuted(&self, perm: &[usize]) -> Hessian {
        let h = Mat::from_fn(perm.len(), perm.len(), |a, b| self.h[(perm[a], perm[b])]);
        Hessian {
            h,
            samples: self.samples,
        }
    }
}

/// Output positions of a convolution to sample for one image: all when there are at most `max`,
/// else `max` of them drawn without replacement (seeded: deterministic).
pub fn sample_positions(total: usize, max: usize, seed: u64) -> Option<Vec<usize>> {
    if total <= max {
        return None;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = sample(&mut rng, total, max).into_vec();
    v.sort_unstable();
    Some(v)
}

/// Seed of the positions sampled for image `index` of layer `layer`.
pub fn position_seed(seed: u64, layer: &str, index: usize) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for b in layer.bytes().chain((index as u64).to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `dst = a aᵀ` on the lower triangle (diagonal included) only: half the work of the full product;
/// the upper triangle is left as it is (never written: zeros), and [`symmetric_to_f64`] mirrors the
/// lower one.
fn set_gram(dst: &mut Mat<f32>, a: MatRef<'_, f32>) {
    triangular::matmul(
        dst.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        a,
        BlockStructure::Rectangular,
        a.transpose(),
        BlockStructure::Rectangular,
        1.0f32,
        Par::Seq,
    );
}

/// `dst = a bᵀ`.
fn set_cross(dst: &mut Mat<f32>, a: MatRef<'_, f32>, b: MatRef<'_, f32>) {
    matmul(
        dst.as_mut(),
        Accum::Replace,
        a,
        b.transpose(),
        1.0f32,
        Par::Seq,
    );
}

/// The symmetric matrix whose lower triangle [`add_gram`] accumulated.
fn symmetric_to_f64(m: &Mat<f32>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| {
        f64::from(if i >= j { m[(i, j)] } else { m[(j, i)] })
    })
}

fn to_f64(m: &Mat<f32>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| f64::from(m[(i, j)]))
}

/// The output positions [`sample_positions`] picks for image `idx` of `conv`'s inputs.
fn positions(
    conv: &Conv,
    x: &Act,
    idx: usize,
    max_positions: usize,
    seed: u64,
) -> Option<Vec<usize>> {
    let out = conv.out_size(x.h);
    sample_positions(
        out * out,
        max_positions,
        position_seed(seed, &conv.name, idx),
    )
}

/// Row-major `rows × p` blocks (one per image) side by side: one `rows × Σp` row-major matrix.
fn side_by_side(rows: usize, blocks: &[Vec<f32>]) -> (Vec<f32>, usize) {
    let total: usize = blocks.iter().map(|b| b.len() / rows.max(1)).sum();
    let mut out = vec![0f32; rows * total];
    let mut off = 0;
    for b in blocks {
        let p = b.len() / rows.max(1);
        for r in 0..rows {
            out[r * total + off..][..p].copy_from_slice(&b[r * p..][..p]);
        }
        off += p;
    }
    (out, total)
}

/// The output positions sampled for images `range` of `inputs` (see [`positions`]).
fn chunk_positions(
    conv: &Conv,
    inputs: &[Act],
    range: Range<usize>,
    max_positions: usize,
    seed: u64,
) -> Vec<Option<Vec<usize>>> {
    range
        .map(|i| positions(conv, &inputs[i], i, max_positions, seed))
        .collect()
}

/// `conv`'s im2col columns over images `first..` of `inputs` at positions `pos` (one entry per image),
/// side by side: `fan_in × Σp`, row-major, so a chunk of images costs one matrix product instead of
/// one per image.
fn chunk_columns(
    conv: &Conv,
    inputs: &[Act],
    first: usize,
    pos: &[Option<Vec<usize>>],
) -> (Vec<f32>, usize) {
    let count = |i: usize, ps: &Option<Vec<usize>>| {
        ps.as_ref()
            .map_or_else(|| conv.out_size(inputs[i].h).pow(2), Vec::len)
    };
    let total: usize = pos
        .iter()
        .enumerate()
        .map(|(j, ps)| count(first + j, ps))
        .sum();
    let mut cols = vec![0f32; conv.fan_in() * total];
    let mut off = 0;
    for (j, ps) in pos.iter().enumerate() {
        let x = &inputs[first + j];
        im2col_into(conv, x, ps.as_deref(), &mut cols, total, off);
        off += count(first + j, ps);
    }
    (cols, total)
}

/// The Hessian of `conv`'s input over `inputs`, with at most `max_positions` output positions per image.
/// The same bits for any thread count ([`ordered`]).
pub fn conv_hessian(conv: &Conv, inputs: &[Act], max_positions: usize, seed: u64) -> Hessian {
    let n = conv.fan_in();
    let (mut acc, mut samples) = (Mat::<f32>::zeros(n, n), 0);
    ordered::reduce_chunks_into(
        inputs.len(),
        || (Mat::<f32>::zeros(n, n), 0),
        |range, (gram, p)| {
            let pos = chunk_positions(conv, inputs, range.clone(), max_positions, seed);
            let (cols, cp) = chunk_columns(conv, inputs, range.start, &pos);
            set_gram(gram, MatRef::from_row_major_slice(&cols, n, cp));
            *p = cp;
        },
        |(gram, p)| {
            acc += gram;
            samples += p;
        },
    );
    Hessian {
        h: symmetric_to_f64(&acc),
        samples,
    }
}

/// For least-squares reconstruction with changed inputs: `(X̂ X̂ᵀ, X Xᵀ-cross X X̂ᵀ)` where `X̂` are the
/// im2col columns of `conv` over `inputs` and `X` those of `ref_conv` over `ref_inputs` (same positions).
pub fn conv_cross_hessian(
    conv: &Conv,
    inputs: &[Act],
    ref_conv: &Conv,
    ref_inputs: &[Act],
    max_positions: usize,
    seed: u64,
) -> (Hessian, Mat<f64>) {
    assert_eq!(inputs.len(), ref_inputs.len());
    let (n, m) = (conv.fan_in(), ref_conv.fan_in());
    let (mut acc, mut cross, mut samples) = (Mat::<f32>::zeros(n, n), Mat::<f32>::zeros(m, n), 0);
    ordered::reduce_chunks_into(
        inputs.len(),
        || (Mat::<f32>::zeros(n, n), Mat::<f32>::zeros(m, n), 0),
        |range, (gram, cr, p)| {
            let pos = chunk_positions(conv, inputs, range.clone(), max_positions, seed);
            let (cols, cp) = chunk_columns(conv, inputs, range.start, &pos);
            let (rcols, _) = chunk_columns(ref_conv, ref_inputs, range.start, &pos);
            let a = MatRef::from_row_major_slice(&cols, n, cp);
            set_gram(gram, a);
            set_cross(cr, MatRef::from_row_major_slice(&rcols, m, cp), a);
            *p = cp;
        },
        |(gram, cr, p)| {
            acc += gram;
            cross += cr;
            samples += p;
        },
    );
    (
        Hessian {
            h: symmetric_to_f64(&acc),
            samples,
        },
        to_f64(&cross),
    )
}

/// [`conv_cross_hessian`] with the cross term already multiplied by the target weights:
/// `(X̂ X̂ᵀ, Σ (W_t X) X̂ᵀ)` (`rows × fan_in`), where `W_t` (row-major `rows × ref_conv.fan_in()`) maps
/// the reference columns to the outputs the refit should reproduce. The product `W_t X` is formed
/// per chunk, so the cost is `rows · (m + n)` per position instead of `m · n` for the cross `X X̂ᵀ`:
/// for a pruned 3×3 layer (`rows` = its kept outputs, `m` = 9 × the dense inputs, `n` = 9 × the kept
/// inputs) 4–6 times fewer products (issue 16, session 13). [`target_cross_is_cheaper`] says which
/// of the two a refit should use.
#[allow(clippy::too_many_arguments)]
pub fn conv_target_cross_hessian(
    conv: &Conv,
    inputs: &[Act],
    ref_conv: &Conv,
    ref_inputs: &[Act],
    target: &[f32],
    rows: usize,
    max_positions: usize,
    seed: u64,
) -> (Hessian, Mat<f64>) {
    assert_eq!(inputs.len(), ref_inputs.len());
    let (n, m) = (conv.fan_in(), ref_conv.fan_in());
    assert_eq!(
        target.len(),
        rows * m,
        "target weights: rows × the reference fan-in"
    );
    let wt = MatRef::from_row_major_slice(target, rows, m);
    let (mut acc, mut cross, mut samples) =
        (Mat::<f32>::zeros(n, n), Mat::<f32>::zeros(rows, n), 0);
    ordered::reduce_chunks_into(
        inputs.len(),
        || (Mat::<f32>::zeros(n, n), Mat::<f32>::zeros(rows, n), 0),
        |range, (gram, cr, p)| {
            let pos = chunk_positions(conv, inputs, range.clone(), max_positions, seed);
            let (cols, cp) = chunk_columns(conv, inputs, range.start, &pos);
            let (rcols, _) = chunk_columns(ref_conv, ref_inputs, range.start, &pos);
            let a = MatRef::from_row_major_slice(&cols, n, cp);
            set_gram(gram, a);
            let mut y = Mat::<f32>::zeros(rows, cp);
            matmul(
                y.as_mut(),
                Accum::Replace,
                wt,
                MatRef::from_row_major_slice(&rcols, m, cp),
                1.0f32,
                Par::Seq,
            );
            set_cross(cr, y.as_ref(), a);
            *p = cp;
        },
        |(gram, cr, p)| {
            acc += gram;
            cross += cr;
            samples += p;
        },
    );
    (
        Hessian {
            h: symmetric_to_f64(&acc),
            samples,
        },
        to_f64(&cross),
    )
}

/// Whether [`conv_target_cross_hessian`] needs fewer products than [`conv_cross_hessian`] followed
/// by `W_t C`: `rows · (m + n) < m · n` per sampled position.
pub fn target_cross_is_cheaper(rows: usize, m: usize, n: usize) -> bool {
    rows * (m + n) < m * n
}

/// `Σ R X̂ᵀ`: the cross product of per-image offsets `R` (`[rows, out, out]`, at `conv`'s output
/// positions) with `conv`'s im2col columns `X̂` over `inputs`, at the positions [`conv_hessian`] and
/// [`conv_cross_hessian`] sample for the same `max_positions` and `seed` (`rows × fan_in`). Added to
/// `W_t C` it makes a least-squares refit match `W_t X + R` instead of `W_t X`.
pub fn conv_offset_cross(
    conv: &Conv,
    inputs: &[Act],
    offsets: &[Act],
    max_positions: usize,
    seed: u64,
) -> Mat<f64> {
    assert_eq!(inputs.len(), offsets.len());
    let n = conv.fan_in();
    let rows = offsets.first().map_or(0, |r| r.c);
    let mut acc = Mat::<f32>::zeros(rows, n);
    ordered::reduce_chunks_into(
        inputs.len(),
        || Mat::<f32>::zeros(rows, n),
        |range, slot| {
            let pos = chunk_positions(conv, inputs, range.clone(), max_positions, seed);
            let (cols, p) = chunk_columns(conv, inputs, range.start, &pos);
            let rblocks: Vec<Vec<f32>> = range
                .zip(&pos)
                .map(|(i, ps)| {
                    let (r, out) = (&offsets[i], conv.out_size(inputs[i].h));
                    assert_eq!((r.h, r.w, r.c), (out, out, rows), "offset shape");
                    match ps {
                        Some(ps) => (0..rows)
                            .flat_map(|c| ps.iter().map(move |&q| r.data[c * out * out + q]))
                            .collect(),
                        None => r.data.clone(),
                    }
                })
                .collect();
            let (rsel, _) = side_by_side(rows, &rblocks);
            set_cross(
                slot,
                MatRef::from_row_major_slice(&rsel, rows, p),
                MatRef::from_row_major_slice(&cols, n, p),
            );
        },
        |slot| acc += slot,
    );
    to_f64(&acc)
}

/// The Hessian of a fully connected layer's input over feature vectors.
pub fn linear_hessian(features: &[Vec<f32>]) -> Hessian {
    let n = features.first().map_or(0, Vec::len);
    let flat: Vec<f32> = features.iter().flatten().copied().collect();
    // Rows are samples here: X = flatᵀ.
    let x = MatRef::from_row_major_slice(&flat, features.len(), n);
    let mut acc = Mat::<f32>::zeros(n, n);
    matmul(
        acc.as_mut(),
        Accum::Replace,
        x.transpose(),
        x,
        1.0f32,
        Par::rayon(0),
    );
    Hessian {
        h: to_f64(&acc),
        samples: features.len(),
    }
}
