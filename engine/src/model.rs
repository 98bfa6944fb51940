//! ResNet50 in memory: the one representation that the importer writes, the variant builders transform,
//! the ONNX writer serializes and the GPU engine executes.
//!
//! BatchNorm is always folded into the convolutions (`weight`, `bias`). Channel counts are per
//! convolution, so a pruned network is the same type with smaller tensors. Quantization parameters, when
//! present, make the ONNX writer emit a QDQ graph.

use std::collections::BTreeMap;

/// A 2-D convolution with bias, square kernel, symmetric padding, optionally followed by ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    /// Node name in the ONNX graph (torchvision naming: `conv1`, `layer1.0.conv2`, `layer2.0.downsample`).
    pub name: String,
    pub out_ch: usize,
    pub in_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    /// `[out_ch, in_ch, kernel, kernel]`, row-major (ONNX/PyTorch OIHW).
    pub weight: Vec<f32>,
    /// `[out_ch]`.
    pub bias: Vec<f32>,
    /// A ReLU follows (fused: no tensor between them in a quantized graph).
    pub relu: bool,
}

impl Conv {
    /// Weights per output channel (`in_ch * kernel * kernel`).
    pub fn fan_in(&self) -> usize {
        self.in_ch * self.kernel * self.kernel
    }

    /// Output side for an input side (square maps).
    pub fn out_size(&self, in_size: usize) -> usize {
        (in_size + 2 * self.pad - self.kernel) / self.stride + 1
    }

    /// Multiply-accumulates for one image with an `in_size`×`in_size` input.
    pub fn macs(&self, in_size: usize) -> u64 {
        let o = self.out_size(in_size) as u64;
        o * o * (self.out_ch * self.fan_in()) as u64
    }

    /// Weight `[o, i, y, x]`.
    pub fn w(&self, o: usize, i: usize, y: usize, x: usize) -> f32 {
        self.weight[((o * self.in_ch + i) * self.kernel + y) * self.kernel + x]
    }

    /// Checks the tensor sizes against the shape fields.
    pub fn validate(&self) -> Result<(), String> {
        if self.weight.len() != self.out_ch * self.fan_in() {
            return Err(format!(
                "{}: weight has {} values, shape [{}, {}, {}, {}] needs {}",
                self.name,
                self.weight.len(),
                self.out_ch,
                self.in_ch,
                self.kernel,
                self.kernel,
                self.out_ch * self.fan_in()
            ));
        }
        if self.bias.len() != self.out_ch {
            return Err(format!(
                "{}: bias has {} values for {} channels",
                self.name,
                self.bias.len(),
                self.out_ch
            ));
        }
        Ok(())
    }
}

/// A fully connected layer `y = W x + b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    pub name: String,
    pub out_features: usize,
    pub in_features: usize,
    /// `[out_features, in_features]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// A bottleneck block: `relu(conv3(conv2(conv1(x))) + shortcut(x))`; `conv1`/`conv2` carry ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct Bottleneck {
    /// `layer{stage}.{index}`.
    pub name: String,
    pub conv1: Conv,
    pub conv2: Conv,
    pub conv3: Conv,
    /// Projection shortcut (first block of a stage); identity otherwise.
    pub downsample: Option<Conv>,
}

impl Bottleneck {
    /// The block's convolutions in execution order (downsample last).
    pub fn convs(&self) -> impl Iterator<Item = &Conv> {
        [&self.conv1, &self.conv2, &self.conv3]
            .into_iter()
            .chain(self.downsample.as_ref())
    }

    pub fn convs_mut(&mut self) -> impl Iterator<Item = &mut Conv> {
        [&mut self.conv1, &mut self.conv2, &mut self.conv3]
            .into_iter()
            .chain(self.downsample.as_mut())
    }

    /// Stride of the block (that of its strided convolution).
    pub fn stride(&self) -> usize {
        self.conv1.stride.max(self.conv2.stride)
    }
}

/// Per-tensor affine quantization of an activation (`q = round(x / scale) + zero_point`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    pub scale: f32,
    pub zero_point: i32,
    /// int8 when true, uint8 otherwise.
    pub signed: bool,
}

/// Per-output-channel symmetric int8 weight quantization (`w = q * scale[o]`, q in ±(2^(bits-1) - 1)).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightQuant {
    pub scales: Vec<f32>,
    /// 8, or 7 for "reduce range" (avoids u8×s8 saturation on AVX2 without VNNI).
    pub bits: u8,
}

/// The quantization of a whole network: activations by tensor name (see [`tensor_names`]), weights by
/// layer name. The weights in the layers hold the dequantized values (exactly `q * scale`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantTable {
    pub acts: BTreeMap<String, ActQuant>,
    pub weights: BTreeMap<String, WeightQuant>,
}

/// Names of the tensors the ONNX writer produces, for calibration and quantization tables.
pub mod tensor_names {
    /// The graph input.
    pub const INPUT: &str = "input";
    /// Input after the exact Caffe-offset subtraction (the stem convolution's input).
    pub const STEM_IN: &str = "stem_in";
    /// After the max pool.
    pub const POOL: &str = "pool";
    /// After global average pooling and flatten (the FC input).
    pub const GAP: &str = "gap";
    /// The output logits.
    pub const LOGITS: &str = "logits";

    /// Output of a convolution (after its ReLU when it has one).
    pub fn conv_out(conv: &str) -> String {
        format!("{conv}.out")
    }
    /// Sum of a block's residual and shortcut, before the ReLU.
    pub fn block_add(block: &str) -> String {
        format!("{block}.add")
    }
    /// A block's output (after the ReLU).
    pub fn block_out(block: &str) -> String {
        format!("{block}.out")
    }
}

/// ResNet50 v1 (stride on the first 1×1 convolution of a stage, as in Keras).
#[derive(Debug, Clone, PartialEq)]
pub struct ResNet {
    /// Per-channel value subtracted from the input before the stem. Zero padding of the stem then equals
    /// Keras's zero padding of the Caffe-normalized input exactly (see [`crate::import`]).
    pub input_offset: [f32; 3],
    /// 7×7 stride-2 convolution + ReLU, followed by a 3×3 stride-2 max pool (padding 1).
    pub stem: Conv,
    /// Four stages of bottleneck blocks (3, 4, 6, 3).
    pub stages: Vec<Vec<Bottleneck>>,
    pub fc: Linear,
    /// Present for the INT8 variant.
    pub quant: Option<QuantTable>,
}

impl ResNet {
    /// Every convolution in execution order.
    pub fn convs(&self) -> impl Iterator<Item = &Conv> {
        std::iter::once(&self.stem).chain(self.stages.iter().flatten().flat_map(|b| b.convs()))
    }

    pub fn convs_mut(&mut self) -> impl Iterator<Item = &mut Conv> {
        std::iter::once(&mut self.stem)
            .chain(self.stages.iter_mut().flatten().flat_map(|b| b.convs_mut()))
    }

    /// The blocks in execution order.
    pub fn blocks(&self) -> impl Iterator<Item = &Bottleneck> {
        self.stages.iter().flatten()
    }

    /// Multiply-accumulates for one `size`×`size` image (convolutions + FC; pooling and adds excluded).
    pub fn macs(&self, size: usize) -> u64 {
        let mut s = size;
        let mut total = self.stem.macs(s);
        s = self.stem.out_size(s);
        s = (s + 2 - 3) / 2 + 1; // max pool 3×3 / 2, pad 1
        for b in self.blocks() {
            total += b.conv1.macs(s);
            let s1 = b.conv1.out_size(s);
            total += b.conv2.macs(s1);
            let s2 = b.conv2.out_size(s1);
            total += b.conv3.macs(s2);
            if let Some(d) = &b.downsample {
                total += d.macs(s);
            }
            s = s2;
        }
        total + (self.fc.out_features * self.fc.in_features) as u64
    }

    /// Number of parameters (weights + biases).
    pub fn params(&self) -> u64 {
        let convs: usize = self.convs().map(|c| c.weight.len() + c.bias.len()).sum();
        (convs + self.fc.weight.len() + self.fc.bias.len()) as u64
    }

    /// Number of nonzero parameters.
    pub fn nonzero_params(&self) -> u64 {
        let nz = |v: &[f32]| v.iter().filter(|&&x| x != 0.0).count();
        let convs: usize = self.convs().map(|c| nz(&c.weight) + nz(&c.bias)).sum();
        (convs + nz(&self.fc.weight) + nz(&self.fc.bias)) as u64
    }

    /// Checks that every tensor has its declared size and consecutive layers agree on channel counts.
    pub fn validate(&self) -> Result<(), String> {
        for c in self.convs() {
            c.validate()?;
        }
        let mut ch = self.stem.out_ch;
        if self.stem.in_ch != 3 {
            return Err(format!(
                "stem takes {} channels, expected 3",
                self.stem.in_ch
            ));
        }
        for b in self.blocks() {
            let chain = [
                (&b.conv1, ch),
                (&b.conv2, b.conv1.out_ch),
                (&b.conv3, b.conv2.out_ch),
            ];
            for (c, expect) in chain {
                if c.in_ch != expect {
                    return Err(format!(
                        "{} takes {} channels but receives {}",
                        c.name, c.in_ch, expect
                    ));
                }
            }
            let short_ch = match &b.downsample {
                Some(d) if d.in_ch != ch => {
                    return Err(format!(
                        "{} takes {} channels but receives {}",
                        d.name, d.in_ch, ch
                    ))
                }
                Some(d) => d.out_ch,
                None => ch,
            };
            if short_ch != b.conv3.out_ch {
                return Err(format!(
                    "{}: residual {} vs shortcut {} channels",
                    b.name, b.conv3.out_ch, short_ch
                ));
            }
            ch = b.conv3.out_ch;
        }
        if self.fc.in_features != ch {
            return Err(format!(
                "fc takes {} features but receives {}",
                self.fc.in_features, ch
            ));
        }
        if self.fc.weight.len() != self.fc.in_features * self.fc.out_features
            || self.fc.bias.len() != self.fc.out_features
        {
            return Err("fc tensor sizes disagree with its shape".into());
        }
        Ok(())
    }
}

/// Folds an inference-mode BatchNorm (`gamma (x - mean) / sqrt(var + eps) + beta`) that follows a
/// convolution into its weights and bias.
pub fn fold_batchnorm(
    conv: &mut Conv,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) {
    let per_out = conv.fan_in();
    for o in 0..conv.out_ch {
        let k = f64::from(gamma[o]) / (f64::from(var[o]) + f64::from(eps)).sqrt();
        for w in &mut conv.weight[o * per_out..(o + 1) * per_out] {
            *w = (f64::from(*w) * k) as f32;
        }
        conv.bias[o] =
            ((f64::from(conv.bias[o]) - f64::from(mean[o])) * k + f64::from(beta[o])) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(out_ch: usize, in_ch: usize, k: usize, seed: u32) -> Conv {
        let n = out_ch * in_ch * k * k;
        let weight = (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Conv {
            name: "c".into(),
            out_ch,
            in_ch,
            kernel: k,
            stride: 1,
            pad: k / 2,
            weight,
            bias: (0..out_ch).map(|o| o as f32 * 0.1).collect(),
            relu: false,
        }
    }

    /// Plain direct convolution at one output position, for checking folding.
    fn conv_at(c: &Conv, x: &[f32], size: usize, o: usize, oy: usize, ox: usize) -> f64 {
        let mut acc = f64::from(c.bias[o]);
        for i in 0..c.in_ch {
            for ky in 0..c.kernel {
                for kx in 0..c.kernel {
                    let (y, xx) = (
                        (oy + ky) as isize - c.pad as isize,
                        (ox + kx) as isize - c.pad as isize,
                    );
                    if y >= 0 && xx >= 0 && (y as usize) < size && (xx as usize) < size {
                        acc += f64::from(c.w(o, i, ky, kx))
                            * f64::from(x[(i * size + y as usize) * size + xx as usize]);
                    }
                }
            }
        }
        acc
    }

    #[test]
    fn batchnorm_folding_equals_conv_then_bn() {
        let mut c = conv(4, 3, 3, 7);
        let orig = c.clone();
        let gamma = [1.5, 0.5, -2.0, 1.0];
        let beta = [0.1, -0.2, 0.3, 0.0];
        let mean = [0.5, -1.0, 0.25, 2.0];
        let var = [0.9, 2.0, 0.01, 1.0];
        let eps = 1e-3;
        fold_batchnorm(&mut c, &gamma, &beta, &mean, &var, eps);
        let size = 5;
        let x: Vec<f32> = (0..3 * size * size)
            .map(|i| ((i * 37) % 11) as f32 / 5.0 - 1.0)
            .collect();
        for o in 0..4 {
            for (oy, ox) in [(0, 0), (2, 3), (4, 4)] {
                let y = conv_at(&orig, &x, size, o, oy, ox);
                let bn = f64::from(gamma[o]) * (y - f64::from(mean[o]))
                    / (f64::from(var[o]) + eps as f64).sqrt()
                    + f64::from(beta[o]);
                let folded = conv_at(&c, &x, size, o, oy, ox);
                assert!((bn - folded).abs() < 1e-4, "o={o}: {bn} vs {folded}");
            }
        }
    }

    #[test]
    fn conv_macs_and_sizes() {
        let mut c = conv(64, 3, 7, 1);
        c.stride = 2;
        c.pad = 3;
        assert_eq!(c.out_size(224), 112);
        assert_eq!(c.macs(224), 112 * 112 * 64 * 3 * 49);
    }
}
