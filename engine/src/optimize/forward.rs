//! A plain, deterministic CPU forward pass of [`ResNet`] (im2col + `faer` matrix products), used by the
//! variant builders to see every intermediate tensor: calibration statistics, layer Hessians and the
//! layer-by-layer propagation that SparseGPT and the pruning reconstruction need. It is independent of
//! ONNX Runtime, which serves the finished files.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use crate::model::{tensor_names as tn, Bottleneck, Conv, Linear, ResNet};

/// One image's activation, `[c, h, w]` row-major (square maps: `h == w`).
#[derive(Debug, Clone, PartialEq)]
pub struct Act {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Act {
    /// Wraps a preprocessed `[3, 224, 224]` image.
    pub fn image(data: Vec<f32>) -> Act {
        assert_eq!(
            data.len(),
            crate::INPUT_LEN,
            "an image tensor has {} floats",
            crate::INPUT_LEN
        );
        Act {
            c: 3,
            h: crate::INPUT_SIZE,
            w: crate::INPUT_SIZE,
            data,
        }
    }

    /// Spatial positions per channel.
    pub fn positions(&self) -> usize {
        self.h * self.w
    }

    /// `[c, h*w]` as a matrix view.
    pub fn mat(&self) -> MatRef<'_, f32> {
        MatRef::from_row_major_slice(&self.data, self.c, self.h * self.w)
    }
}

/// Columns of the im2col matrix of `conv` applied to `x`: `[in_ch * k * k, positions]` row-major, row
/// index `(i * k + y) * k + x` (the OIHW weight order), restricted to the output positions in `select`
/// when given (indices into the `out × out` map, row-major).
pub fn im2col(conv: &Conv, x: &Act, select: Option<&[usize]>) -> Vec<f32> {
    let p = select.map_or_else(|| conv.out_size(x.h).pow(2), <[usize]>::len);
    let mut cols = vec![0f32; conv.fan_in() * p];
    im2col_into(conv, x, select, &mut cols, p, 0);
    cols
}

/// [`im2col`] written into `dst`, a row-major matrix of `fan_in` rows of `width` values, at columns
/// `offset..offset + p`: several images' columns side by side without a copy.
pub fn im2col_into(
    conv: &Conv,
    x: &Act,
    select: Option<&[usize]>,
    dst: &mut [f32],
    width: usize,
    offset: usize,
) {
    assert_eq!(
        x.c, conv.in_ch,
        "{}: input has {} channels, conv takes {}",
        conv.name, x.c, conv.in_ch
    );
    let k = conv.kernel;
    let out = conv.out_size(x.h);
    let (pad, stride) = (conv.pad as isize, conv.stride as isize);
    // Each position's top-left input pixel (may lie in the padding), computed once.
    let corner = |q: usize| {
        let (oy, ox) = ((q / out) as isize, (q % out) as isize);
        (oy * stride - pad, ox * stride - pad)
    };
    let corners: Vec<(isize, isize)> = match select {
        Some(s) => s.iter().map(|&q| corner(q)).collect(),
        None => (0..out * out).map(corner).collect(),
    };
    let p = corners.len();
    assert!(offset + p <= width && dst.len() >= conv.fan_in() * width);
    let (h, w) = (x.h, x.w);
    for i in 0..conv.in_ch {
        let plane = &x.data[i * h * w..(i + 1) * h * w];
        for ky in 0..k {
            for kx in 0..k {
                let row = ((i * k + ky) * k + kx) * width + offset;
                for (d, &(y0, x0)) in dst[row..row + p].iter_mut().zip(&corners) {
                    // Negative coordinates wrap to huge values and fail the bounds test.
                    let (yy, xx) = ((y0 + ky as isize) as usize, (x0 + kx as isize) as usize);
                    *d = if yy < h && xx < w {
                        plane[yy * w + xx]
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// `conv(x)` (+ bias, + ReLU when the layer has one), without the ReLU when `pre_relu` is set.
pub fn conv_forward_opt(conv: &Conv, x: &Act, pre_relu: bool) -> Act {
    let out = conv.out_size(x.h);
    let p = out * out;
    let direct = conv.kernel == 1 && conv.stride == 1 && conv.pad == 0;
    let cols_owned;
    let cols: MatRef<'_, f32> = if direct {
        x.mat()
    } else {
        cols_owned = im2col(conv, x, None);
        MatRef::from_row_major_slice(&cols_owned, conv.fan_in(), p)
    };
    let mut y = vec![0f32; conv.out_ch * p];
    {
        let w = MatRef::from_row_major_slice(&conv.weight, conv.out_ch, conv.fan_in());
        let dst = MatMut::from_row_major_slice_mut(&mut y, conv.out_ch, p);
        matmul(dst, Accum::Replace, w, cols, 1.0f32, Par::Seq);
    }
    let relu = conv.relu && !pre_relu;
    for (o, row) in y.chunks_exact_mut(p).enumerate() {
        let b = conv.bias[o];
        for v in row {
            *v += b;
            if relu && *v < 0.0 {
                *v = 0.0;
            }
        }
    }
    Act {
        c: conv.out_ch,
        h: out,
        w: out,
        data: y,
    }
}

/// `conv(x)` with the layer's own activation.
pub fn conv_forward(conv: &Conv, x: &Act) -> Act {
    conv_forward_opt(conv, x, false)
}

/// 3×3 stride-2 max pool with padding 1 (padding never wins).
pub fn max_pool(x: &Act) -> Act {
    let out = (x.h + 2 - 3) / 2 + 1;
    let mut y = vec![f32::NEG_INFINITY; x.c * out * out];
    for c in 0..x.c {
        let plane = &x.data[c * x.h * x.w..][..x.h * x.w];
        for oy in 0..out {
            for ox in 0..out {
                let mut m = f32::NEG_INFINITY;
                for ky in 0..3 {
                    for kx in 0..3 {
                        let (yy, xx) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                        if yy >= 0 && xx >= 0 && (yy as usize) < x.h && (xx as usize) < x.w {
                            m = m.max(plane[yy as usize * x.w + xx as usize]);
                        }
                    }
                }
                y[(c * out + oy) * out + ox] = m;
            }
        }
    }
    Act {
        c: x.c,
        h: out,
        w: out,
        data: y,
    }
}

/// Input offset subtraction (the graph's `Sub`, giving `stem_in`).
pub fn stem_input(net: &ResNet, image: &Act) -> Act {
    let p = image.positions();
    let mut x = image.clone();
    for (c, plane) in x.data.chunks_exact_mut(p).enumerate() {
        for v in plane {
            *v -= net.input_offset[c];
        }
    }
    x
}

/// Stem convolution + ReLU + max pool: the input of the first block.
pub fn stem(net: &ResNet, image: &Act) -> Act {
    max_pool(&conv_forward(&net.stem, &stem_input(net, image)))
}

/// One bottleneck block.
pub fn block_forward(b: &Bottleneck, x: &Act) -> Act {
    let h = conv_forward(
        &b.conv3,
        &conv_forward(&b.conv2, &conv_forward(&b.conv1, x)),
    );
    residual(b, x, h)
}

/// `relu(h + shortcut(x))`.
pub fn residual(b: &Bottleneck, x: &Act, h: Act) -> Act {
    let short = b.downsample.as_ref().map(|d| conv_forward(d, x));
    residual_add(h, short.as_ref().unwrap_or(x))
}

/// `relu(h + s)`: a block's output from its last conv's output and the shortcut's.
pub fn residual_add(mut h: Act, s: &Act) -> Act {
    assert_eq!(h.data.len(), s.data.len(), "residual shapes differ");
    for (v, &r) in h.data.iter_mut().zip(&s.data) {
        *v = (*v + r).max(0.0);
    }
    h
}

/// Global average pooling: one value per channel.
pub fn global_avg_pool(x: &Act) -> Vec<f32> {
    let p = x.positions();
    x.data
        .chunks_exact(p)
        .map(|c| (c.iter().map(|&v| f64::from(v)).sum::<f64>() / p as f64) as f32)
        .collect()
}

/// `W x + b` for one feature vector.
pub fn linear(fc: &Linear, x: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), fc.in_features);
    fc.weight
        .chunks_exact(fc.in_features)
        .zip(&fc.bias)
        .map(|(row, &b)| row.iter().zip(x).map(|(&w, &v)| w * v).sum::<f32>() + b)
        .collect()
}

/// Logits of one preprocessed image.
pub fn forward(net: &ResNet, image: &Act) -> Vec<f32> {
    forward_observed(net, image, &mut |_, _| {})
}

/// Logits of one image, reporting every tensor the ONNX writer can quantize (by its
/// [`tensor_names`](crate::model::tensor_names) name) to `observe` as it is computed.
pub fn forward_observed(
    net: &ResNet,
    image: &Act,
    observe: &mut dyn FnMut(&str, &[f32]),
) -> Vec<f32> {
    let x = stem_input(net, image);
    observe(tn::STEM_IN, &x.data);
    let s = conv_forward(&net.stem, &x);
    observe(&tn::conv_out(&net.stem.name), &s.data);
    let mut x = max_pool(&s);
    observe(tn::POOL, &x.data);
    for b in net.blocks() {
        let h1 = conv_forward(&b.conv1, &x);
        observe(&tn::conv_out(&b.conv1.name), &h1.data);
        let h2 = conv_forward(&b.conv2, &h1);
        observe(&tn::conv_out(&b.conv2.name), &h2.data);
        let mut h3 = conv_forward(&b.conv3, &h2);
        observe(&tn::conv_out(&b.conv3.name), &h3.data);
        let short = b.downsample.as_ref().map(|d| conv_forward(d, &x));
        if let (Some(d), Some(s)) = (&b.downsample, &short) {
            observe(&tn::conv_out(&d.name), &s.data);
        }
        let s = short.as_ref().unwrap_or(&x);
        for (v, &r) in h3.data.iter_mut().zip(&s.data) {
            *v += r;
        }
        observe(&tn::block_add(&b.name), &h3.data);
        for v in &mut h3.data {
            *v = v.max(0.0);
        }
        observe(&tn::block_out(&b.name), &h3.data);
        x = h3;
    }
    let g = global_avg_pool(&x);
    observe(tn::GAP, &g);
    linear(&net.fc, &g)
}

/// Every tensor name [`forward_observed`] reports, in order.
pub fn observed_tensors(net: &ResNet) -> Vec<String> {
    let mut v = vec![
        tn::STEM_IN.to_string(),
        tn::conv_out(&net.stem.name),
        tn::POOL.to_string(),
    ];
    for b in net.blocks() {
        for c in [&b.conv1, &b.conv2, &b.conv3] {
            v.push(tn::conv_out(&c.name));
        }
        if let Some(d) = &b.downsample {
            v.push(tn::conv_out(&d.name));
        }
        v.push(tn::block_add(&b.name));
        v.push(tn::block_out(&b.name));
    }
    v.push(tn::GAP.to_string());
    v
}

/// Logits for many images, in parallel over images.
pub fn forward_batch(net: &ResNet, images: &[Act]) -> Vec<Vec<f32>> {
    use rayon::prelude::*;
    images.par_iter().map(|x| forward(net, x)).collect()
}
