//! Layer Hessians `H = X Xᵀ` of the squared reconstruction error `‖W X − W' X‖²`, from calibration
//! inputs (im2col columns of a convolution, feature vectors of the FC layer).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rand::seq::index::sample;
use rand::SeedableRng;
use rayon::prelude::*;

use super::forward::{im2col, Act};
use crate::model::Conv;

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

fn add_gram(acc: &mut Mat<f32>, cols: MatRef<'_, f32>) {
    matmul(
        acc.as_mut(),
        Accum::Add,
        cols,
        cols.transpose(),
        1.0f32,
        Par::Seq,
    );
}

fn add_cross(acc: &mut Mat<f32>, a: MatRef<'_, f32>, b: MatRef<'_, f32>) {
    matmul(acc.as_mut(), Accum::Add, a, b.transpose(), 1.0f32, Par::Seq);
}

fn to_f64(m: &Mat<f32>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| f64::from(m[(i, j)]))
}

/// The Hessian of `conv`'s input over `inputs`, with at most `max_positions` output positions per image.
pub fn conv_hessian(conv: &Conv, inputs: &[Act], max_positions: usize, seed: u64) -> Hessian {
    let n = conv.fan_in();
    let (acc, samples) = inputs
        .par_iter()
        .enumerate()
        .fold(
            || (Mat::<f32>::zeros(n, n), 0usize),
            |(mut acc, count), (idx, x)| {
                let out = conv.out_size(x.h);
                let pos = sample_positions(
                    out * out,
                    max_positions,
                    position_seed(seed, &conv.name, idx),
                );
                let cols = im2col(conv, x, pos.as_deref());
                let p = cols.len() / n;
                add_gram(&mut acc, MatRef::from_row_major_slice(&cols, n, p));
                (acc, count + p)
            },
        )
        .reduce(
            || (Mat::zeros(n, n), 0),
            |(a, ca), (b, cb)| (a + b, ca + cb),
        );
    Hessian {
        h: to_f64(&acc),
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
    let (acc, cross, samples) = inputs
        .par_iter()
        .zip(ref_inputs)
        .enumerate()
        .fold(
            || (Mat::<f32>::zeros(n, n), Mat::<f32>::zeros(m, n), 0usize),
            |(mut acc, mut cross, count), (idx, (x, r))| {
                let out = conv.out_size(x.h);
                let pos = sample_positions(
                    out * out,
                    max_positions,
                    position_seed(seed, &conv.name, idx),
                );
                let cols = im2col(conv, x, pos.as_deref());
                let rcols = im2col(ref_conv, r, pos.as_deref());
                let p = cols.len() / n;
                let a = MatRef::from_row_major_slice(&cols, n, p);
                add_gram(&mut acc, a);
                add_cross(&mut cross, MatRef::from_row_major_slice(&rcols, m, p), a);
                (acc, cross, count + p)
            },
        )
        .reduce(
            || (Mat::zeros(n, n), Mat::zeros(m, n), 0),
            |(a, c, ca), (b, d, cb)| (a + b, c + d, ca + cb),
        );
    (
        Hessian {
            h: to_f64(&acc),
            samples,
        },
        to_f64(&cross),
    )
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
    let acc = inputs
        .par_iter()
        .zip(offsets)
        .enumerate()
        .fold(
            || Mat::<f32>::zeros(rows, n),
            |mut acc, (idx, (x, r))| {
                let out = conv.out_size(x.h);
                assert_eq!((r.h, r.w, r.c), (out, out, rows), "offset shape");
                let pos = sample_positions(
                    out * out,
                    max_positions,
                    position_seed(seed, &conv.name, idx),
                );
                let cols = im2col(conv, x, pos.as_deref());
                let p = cols.len() / n;
                let rsel: Vec<f32> = match &pos {
                    Some(ps) => (0..rows)
                        .flat_map(|c| ps.iter().map(move |&q| r.data[c * out * out + q]))
                        .collect(),
                    None => r.data.clone(),
                };
                add_cross(
                    &mut acc,
                    MatRef::from_row_major_slice(&rsel, rows, p),
                    MatRef::from_row_major_slice(&cols, n, p),
                );
                acc
            },
        )
        .reduce(|| Mat::zeros(rows, n), |a, b| a + b);
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
