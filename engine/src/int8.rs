//! The integer form of an INT8 (QDQ) network: what the GPU engine's int8 tensor-core path executes,
//! and a CPU reference of exactly that arithmetic.
//!
//! The QDQ file (see [`crate::onnx_io`]) stores per-output-channel int8 weights, int32 biases and a
//! `QuantizeLinear`/`DequantizeLinear` pair on the input of every convolution, on every convolution's
//! output and on every block's output. Its activations are uint8 (`U8S8`); int8 tensor cores multiply
//! signed bytes, so every activation is stored here as `u8 − 128` (a *storage zero point* `z = zp − 128`).
//! Nothing is lost: for a convolution with input zero point `z_x`,
//!
//! ```text
//! Σ w·(x_u8 − zp_x) = Σ w·x_s8 − z_x·Σw        (x_s8 = x_u8 − 128, z_x = zp_x − 128)
//! ```
//!
//! and `−z_x·Σw` is a per-channel integer folded into the bias; padding is written as `z_x` (the stored
//! form of a real 0). Every convolution then is `acc = W_s8 · im2col(x_s8)` (int32) followed by an
//! epilogue per output channel `c`:
//!
//! ```text
//! y = sat8(rint((acc + ofs[c]) · mult[c]) + z_y)      ofs = b_q − z_x·Σw,  mult = s_x·s_w[c] / s_y
//! ```
//!
//! which is ONNX Runtime's requantization of a `QLinearConv`; ReLU is the saturation at the output's
//! zero point (−128 stored). A block's last convolution also quantizes its own output and adds the
//! shortcut like a `QLinearAdd`:
//!
//! ```text
//! q3 = sat8(rint((acc + ofs)·mult) + z_3);  y = sat8(rint((s_3(q3 − z_3) + s_sc(sc − z_sc)) / s_o) + z_o)
//! ```
//!
//! A library that requantizes inside its GEMM or convolution computes the same thing as one affine map,
//! `sat8(rint(acc·mult[c] + bias[c]))` with [`QConv::requant_bias`]; it may land one step away where a
//! value sits next to a rounding tie.

use crate::error::{Error, Result};
use crate::model::{tensor_names as tn, ActQuant, Conv, ResNet};
use crate::INPUT_SIZE;

/// An activation as stored: `real = scale · (q − zero)`, `q` an int8.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stored {
    pub scale: f32,
    /// The storage zero point (`zp − 128` for a uint8 tensor of the file, `zp` for an int8 one).
    pub zero: i32,
}

impl Stored {
    pub fn of(q: ActQuant) -> Self {
        Stored {
            scale: q.scale,
            zero: if q.signed {
                q.zero_point
            } else {
                q.zero_point - 128
            },
        }
    }

    /// `QuantizeLinear` (round half to even, saturate), in storage form.
    pub fn quantize(&self, x: f32) -> i8 {
        sat8((x / self.scale).round_ties_even() as i64 + i64::from(self.zero))
    }

    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (i32::from(q) - self.zero) as f32
    }
}

/// Saturation to int8.
pub fn sat8(v: i64) -> i8 {
    v.clamp(-128, 127) as i8
}

/// The residual add after a block's last convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Residual {
    /// The shortcut tensor (block input or projection output).
    pub short: Stored,
    /// The block's output.
    pub out: Stored,
}

/// One convolution in integer form.
#[derive(Debug, Clone)]
pub struct QConv {
    pub name: String,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    /// GEMM depth: `k·k·cin` rounded up to a multiple of 16 (zero weights in the padding).
    pub kdim: usize,
    /// `[cout][kdim]`, the reduction index `(ky·k + kx)·cin + ci` (OHWI), int8.
    pub w: Vec<i8>,
    /// Integer offset per channel: `b_q − z_x·Σw`.
    pub ofs: Vec<i32>,
    /// Requantization multiplier per channel: `s_x·s_w[c] / s_y`.
    pub mult: Vec<f32>,
    /// The input as stored (its zero is the padding value).
    pub input: Stored,
    /// This convolution's own output (for a block's last convolution: before the add).
    pub output: Stored,
    /// Present for a block's last convolution.
    pub residual: Option<Residual>,
}

impl QConv {
    fn new(c: &Conv, net: &ResNet, input: Stored, residual: Option<Residual>) -> Result<Self> {
        let q = net
            .quant
            .as_ref()
            .ok_or_else(|| missing("a quantization table"))?;
        let wq = q
            .weights
            .get(&c.name)
            .ok_or_else(|| missing(&format!("int8 weights of {}", c.name)))?;
        let output = Stored::of(
            *q.acts
                .get(&tn::conv_out(&c.name))
                .ok_or_else(|| missing(&format!("the output quantization of {}", c.name)))?,
        );
        if residual.is_none() && c.relu && output.zero != -128 {
            return Err(Error::Shape(format!(
                "{}: a ReLU output must be quantized with its zero point at the bottom",
                c.name
            )));
        }
        let taps = c.kernel * c.kernel * c.in_ch;
        let kdim = taps.div_ceil(16) * 16;
        let mut w = vec![0i8; c.out_ch * kdim];
        let mut ofs = Vec::with_capacity(c.out_ch);
        let mut mult = Vec::with_capacity(c.out_ch);
        for o in 0..c.out_ch {
            let s_w = wq.scales[o];
            let mut sum = 0i64;
            for ky in 0..c.kernel {
                for kx in 0..c.kernel {
                    for ci in 0..c.in_ch {
                        let v = (c.w(o, ci, ky, kx) / s_w).round_ties_even() as i64;
                        if v.abs() > 127 {
                            return Err(Error::Shape(format!(
                                "{}: weight {v} is not int8",
                                c.name
                            )));
                        }
                        w[o * kdim + (ky * c.kernel + kx) * c.in_ch + ci] = v as i8;
                        sum += v;
                    }
                }
            }
            let acc_scale = input.scale * s_w;
            let b_q = (c.bias[o] / acc_scale).round_ties_even() as i64;
            ofs.push(
                i32::try_from(b_q - i64::from(input.zero) * sum)
                    .map_err(|_| Error::Shape(format!("{}: bias out of int32 range", c.name)))?,
            );
            mult.push(acc_scale / output.scale);
        }
        Ok(QConv {
            name: c.name.clone(),
            cin: c.in_ch,
            cout: c.out_ch,
            k: c.kernel,
            stride: c.stride,
            pad: c.pad,
            kdim,
            w,
            ofs,
            mult,
            input,
            output,
            residual,
        })
    }

    pub fn out_size(&self, h: usize) -> usize {
        (h + 2 * self.pad - self.k) / self.stride + 1
    }

    /// The exact epilogue of one accumulator (`sc`: the stored shortcut value for a residual layer).
    pub fn exact(&self, c: usize, acc: i32, sc: i8) -> i8 {
        let q = sat8(
            ((i64::from(acc) + i64::from(self.ofs[c])) as f32 * self.mult[c]).round_ties_even()
                as i64
                + i64::from(self.output.zero),
        );
        match self.residual {
            None => q,
            Some(r) => {
                let sum = self.output.dequantize(q) + r.short.dequantize(sc);
                r.out.quantize(sum)
            }
        }
    }

    /// The requantization as one affine map of the accumulator: `sat8(rint(acc·mult[c] + bias[c]))`
    /// with `bias = ofs·mult + z_y` (this layer's own output; a residual is added afterwards).
    pub fn requant_bias(&self) -> Vec<f32> {
        self.ofs
            .iter()
            .zip(&self.mult)
            .map(|(&o, &m)| o as f32 * m + self.output.zero as f32)
            .collect()
    }
}

/// One bottleneck block in integer form.
#[derive(Debug, Clone)]
pub struct QBlock {
    pub name: String,
    pub conv1: QConv,
    pub conv2: QConv,
    /// Carries the residual add.
    pub conv3: QConv,
    pub downsample: Option<QConv>,
}

/// A whole INT8 ResNet in integer form.
#[derive(Debug, Clone)]
pub struct QNet {
    pub input_offset: [f32; 3],
    /// The stem's input (the offset-subtracted image), as stored.
    pub stem_in: Stored,
    pub stem: QConv,
    pub blocks: Vec<QBlock>,
    /// The last block's output.
    pub last: Stored,
    /// The FC input (after global average pooling), if the file quantizes it.
    pub gap: Option<Stored>,
    /// FC weights `[out][in]` (dequantized) and bias.
    pub fc_w: Vec<f32>,
    pub fc_b: Vec<f32>,
    pub fc_in: usize,
    pub fc_out: usize,
}

fn missing(what: &str) -> Error {
    Error::Shape(format!(
        "not an INT8 network the integer path runs: no {what}"
    ))
}

impl QNet {
    /// The integer form of `net`, which must carry a complete quantization table (the INT8 variant).
    pub fn new(net: &ResNet) -> Result<Self> {
        net.validate()
            .map_err(|e| Error::Shape(format!("invalid network: {e}")))?;
        let q = net
            .quant
            .as_ref()
            .ok_or_else(|| missing("quantization table"))?;
        let act = |name: &str| -> Result<Stored> {
            q.acts
                .get(name)
                .map(|a| Stored::of(*a))
                .ok_or_else(|| missing(&format!("quantization of {name}")))
        };
        let stem_in = act(tn::STEM_IN)?;
        let stem = QConv::new(&net.stem, net, stem_in, None)?;
        let pool = act(tn::POOL)?;
        if pool != stem.output {
            return Err(missing("max pool quantized like the stem's output"));
        }
        let mut x = pool;
        let mut blocks = Vec::new();
        for b in net.blocks() {
            for c in b.convs().skip(1) {
                if c.in_ch % 16 != 0 {
                    return Err(Error::Shape(format!(
                        "{}: {} input channels (the int8 path needs multiples of 16)",
                        c.name, c.in_ch
                    )));
                }
            }
            let conv1 = QConv::new(&b.conv1, net, x, None)?;
            let conv2 = QConv::new(&b.conv2, net, conv1.output, None)?;
            let downsample = match &b.downsample {
                Some(d) => Some(QConv::new(d, net, x, None)?),
                None => None,
            };
            let short = downsample.as_ref().map_or(x, |d| d.output);
            let out = act(&tn::block_out(&b.name)).or_else(|_| act(&tn::block_add(&b.name)))?;
            if out.zero != -128 {
                return Err(missing(
                    "block outputs quantized with the ReLU at the zero point",
                ));
            }
            let conv3 = QConv::new(&b.conv3, net, conv2.output, Some(Residual { short, out }))?;
            blocks.push(QBlock {
                name: b.name.clone(),
                conv1,
                conv2,
                conv3,
                downsample,
            });
            x = out;
        }
        Ok(QNet {
            input_offset: net.input_offset,
            stem_in,
            stem,
            blocks,
            last: x,
            gap: q.acts.get(tn::GAP).map(|a| Stored::of(*a)),
            fc_w: net.fc.weight.clone(),
            fc_b: net.fc.bias.clone(),
            fc_in: net.fc.in_features,
            fc_out: net.fc.out_features,
        })
    }

    /// Every convolution in execution order (per block: conv1, conv2, downsample, conv3).
    pub fn convs(&self) -> impl Iterator<Item = &QConv> {
        std::iter::once(&self.stem).chain(self.blocks.iter().flat_map(|b| {
            [&b.conv1, &b.conv2]
                .into_iter()
                .chain(b.downsample.as_ref())
                .chain(std::iter::once(&b.conv3))
        }))
    }

    /// Logits of one image (NCHW f32, torchvision-normalized) computed on the CPU with the integer
    /// arithmetic the GPU path uses: the reference its results are checked against.
    pub fn forward(&self, image: &[f32]) -> Vec<f32> {
        let x = self.last_block(image);
        let gap = self.pool(&x);
        (0..self.fc_out)
            .map(|o| {
                let w = &self.fc_w[o * self.fc_in..(o + 1) * self.fc_in];
                self.fc_b[o] + w.iter().zip(&gap).map(|(a, b)| a * b).sum::<f32>()
            })
            .collect()
    }

    /// The last block's output of one image, dequantized (`scale · (q − zero)`, the file's
    /// `DequantizeLinear` before its global average pool) as `[channels, h, w]`: the feature map of
    /// a class activation map ([`crate::cam`]), the reference for the GPU's.
    pub fn feature_map(&self, image: &[f32]) -> crate::cam::FeatureMap {
        let x = self.last_block(image);
        let hw = x.h * x.h;
        let mut data = vec![0f32; x.c * hw];
        for p in 0..hw {
            for c in 0..x.c {
                data[c * hw + p] = self.last.dequantize(x.data[p * x.c + c]);
            }
        }
        crate::cam::FeatureMap {
            channels: x.c,
            height: x.h,
            width: x.h,
            data,
        }
    }

    /// The integer forward pass up to the last block's output.
    fn last_block(&self, image: &[f32]) -> Tensor {
        let s = INPUT_SIZE;
        // Stem input, stored NHWC int8.
        let mut x = Tensor::new(s, 3);
        for c in 0..3 {
            for p in 0..s * s {
                x.data[p * 3 + c] = self
                    .stem_in
                    .quantize(image[c * s * s + p] - self.input_offset[c]);
            }
        }
        let y = conv(&self.stem, &x, None);
        let mut x = max_pool(&y);
        for b in &self.blocks {
            let h1 = conv(&b.conv1, &x, None);
            let h2 = conv(&b.conv2, &h1, None);
            let short = b.downsample.as_ref().map(|d| conv(d, &x, None));
            x = conv(&b.conv3, &h2, Some(short.as_ref().unwrap_or(&x)));
        }
        x
    }

    /// Global average pooling of the last block's output, quantized as the file quantizes the FC input.
    fn pool(&self, x: &Tensor) -> Vec<f32> {
        let hw = x.h * x.h;
        (0..x.c)
            .map(|c| {
                let sum: f32 = (0..hw)
                    .map(|p| self.last.dequantize(x.data[p * x.c + c]))
                    .sum();
                let mean = sum / hw as f32;
                match self.gap {
                    Some(g) => g.dequantize(g.quantize(mean)),
                    None => mean,
                }
            })
            .collect()
    }
}

/// One image's activation, NHWC int8 (square).
struct Tensor {
    h: usize,
    c: usize,
    data: Vec<i8>,
}

impl Tensor {
    fn new(h: usize, c: usize) -> Self {
        Tensor {
            h,
            c,
            data: vec![0; h * h * c],
        }
    }
}

/// A convolution with its epilogue (`short`: the stored shortcut of a residual layer).
fn conv(l: &QConv, x: &Tensor, short: Option<&Tensor>) -> Tensor {
    let oh = l.out_size(x.h);
    let mut y = Tensor::new(oh, l.cout);
    let pad = l.input.zero as i8;
    let mut col = vec![0i8; l.kdim];
    for oy in 0..oh {
        for ox in 0..oh {
            // im2col of one output position.
            col.fill(0);
            for ky in 0..l.k {
                for kx in 0..l.k {
                    let iy = (oy * l.stride + ky) as isize - l.pad as isize;
                    let ix = (ox * l.stride + kx) as isize - l.pad as isize;
                    let dst = &mut col[(ky * l.k + kx) * l.cin..][..l.cin];
                    if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.h as isize {
                        dst.fill(pad);
                    } else {
                        let p = (iy as usize * x.h + ix as usize) * x.c;
                        dst.copy_from_slice(&x.data[p..p + l.cin]);
                    }
                }
            }
            let p = oy * oh + ox;
            for o in 0..l.cout {
                let w = &l.w[o * l.kdim..(o + 1) * l.kdim];
                let acc: i32 = w
                    .iter()
                    .zip(&col)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum();
                let sc = short.map_or(0, |s| s.data[p * l.cout + o]);
                y.data[p * l.cout + o] = l.exact(o, acc, sc);
            }
        }
    }
    y
}

/// 3×3 stride-2 max pool with padding 1 on stored values (monotone: the same on the real values).
fn max_pool(x: &Tensor) -> Tensor {
    let oh = (x.h + 2 - 3) / 2 + 1;
    let mut y = Tensor::new(oh, x.c);
    for oy in 0..oh {
        for ox in 0..oh {
            for c in 0..x.c {
                let mut m = i8::MIN;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let iy = (oy * 2 + dy) as isize - 1;
                        let ix = (ox * 2 + dx) as isize - 1;
                        if iy >= 0 && ix >= 0 && iy < x.h as isize && ix < x.h as isize {
                            m = m.max(x.data[(iy as usize * x.h + ix as usize) * x.c + c]);
                        }
                    }
                }
                y.data[(oy * oh + ox) * x.c + c] = m;
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-map form of the requantization agrees with the exact one, up to one step near ties.
    #[test]
    fn the_affine_map_matches_the_exact_requantization() {
        let cout = 8;
        let l = QConv {
            name: "t".into(),
            cin: 16,
            cout,
            k: 1,
            stride: 1,
            pad: 0,
            kdim: 16,
            w: vec![0; cout * 16],
            ofs: (0..cout as i32).map(|c| c * 37 - 100).collect(),
            mult: (0..cout).map(|c| 0.002 + c as f32 * 1e-4).collect(),
            input: Stored {
                scale: 0.1,
                zero: -128,
            },
            output: Stored {
                scale: 0.2,
                zero: -128,
            },
            residual: None,
        };
        let bias = l.requant_bias();
        let (mut total, mut off) = (0, 0);
        for acc in (-60_000..60_000).step_by(7) {
            for (o, (&m, &b)) in l.mult.iter().zip(&bias).enumerate() {
                let want = l.exact(o, acc, 0);
                let got = sat8((acc as f32 * m + b).round_ties_even() as i64);
                assert!((i32::from(want) - i32::from(got)).abs() <= 1, "{acc} {o}");
                total += 1;
                off += usize::from(want != got);
            }
        }
        assert!(off * 100 <= total, "{off} of {total} off by one");
    }

    #[test]
    fn storage_zero_points() {
        let u = Stored::of(ActQuant {
            scale: 0.5,
            zero_point: 0,
            signed: false,
        });
        assert_eq!(u.zero, -128);
        assert_eq!(u.quantize(-3.0), -128); // ReLU by saturation
        assert_eq!(u.quantize(1.0), -126);
        assert_eq!(u.dequantize(-126), 1.0);
        let s = Stored::of(ActQuant {
            scale: 0.25,
            zero_point: 128,
            signed: false,
        });
        assert_eq!(s.zero, 0);
        assert_eq!(s.quantize(-0.5), -2);
        // Round half to even, as QuantizeLinear.
        assert_eq!(s.quantize(0.125), 0);
        assert_eq!(s.quantize(0.375), 2);
    }
}
